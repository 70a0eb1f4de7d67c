import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2

/// Reads one server stream of `/hangar.bench.v1.Echo/Stream` (the `stream` scenario) on a `GRPCClientHandler`'s
/// connection, and is the stream's flow control: the server can send only what this consumer returns to the
/// stream's receive window, so its pace is what the server (or hangard, relaying) sees as the client reading.
///
/// Every message is checked as it completes: the 5-byte prefix and the protobuf header must give the size asked
/// for, and the index in its first payload bytes must be the next one (nothing lost, repeated or reordered). A
/// wrong message, a response that is not gRPC, or a status other than OK fails the stream (and the phase) with the
/// reason. Used on the connection's event loop only.
final class GRPCStreamConsumer: GRPCStreamReader {
    /// How fast the consumer takes messages, and so returns window to the server.
    enum Pace: Sendable, Equatable {
        /// Every message as it arrives: its bytes go back to the window once half the window is owed, as a client
        /// that keeps up does.
        case fast
        /// At most `messagesPerSecond`, on a timer (a token bucket refilled every `tick`, holding up to
        /// `maxSavedUp` of consumption, so that a timer delayed by a busy client thread costs no rate): a message's
        /// bytes go back to the window only once it is consumed, so the server is at most one window ahead of the
        /// consumer.
        case limited(messagesPerSecond: Double)
    }

    /// What the consumer has seen so far.
    struct Counts: Sendable {
        /// Complete, checked messages.
        var received = 0
        /// Messages consumed (their bytes returned to the window); `received` for a fast consumer.
        var consumed = 0
        /// Messages received and not yet consumed: about a window's worth while the server keeps up with a limited
        /// consumer, near 0 when the consumer waits for messages instead.
        var backlog: Int { received - consumed }
    }

    /// How often a limited consumer consumes.
    static let tick = TimeAmount.milliseconds(10)
    /// The most a limited consumer saves up while its timer is late, in seconds of its rate.
    static let maxSavedUp = 0.1

    let pace: Pace
    /// The messages the stream must carry before OK trailers; nil when it runs until cancelled (then any end of
    /// the stream is a failure).
    let expectedCount: Int?
    private weak var handler: GRPCClientHandler?
    private let eventLoop: any EventLoop
    /// Wire bytes of one message: prefix, protobuf field header, payload.
    private let messageWireBytes: Int
    /// The bytes every message starts with, before its index: the prefix (uncompressed, its length) and the
    /// payload field's tag and length.
    private let messageHeader: [UInt8]
    private let done: EventLoopPromise<Counts>
    private var id: HTTP2StreamID?
    private var pending = ByteBuffer()
    private(set) var counts = Counts()
    private var headersSeen = false
    /// Stream bytes received and not yet returned to the window.
    private var uncredited = 0
    private var tokens = 0.0
    private var lastTick = NIODeadline.now()
    private var timer: RepeatedTask?
    private var isOver = false

    /// `payloadBytes` is the size each message's payload must have (at least 8: the index).
    init(
        handler: GRPCClientHandler, eventLoop: any EventLoop, pace: Pace, payloadBytes: Int, expectedCount: Int? = nil
    ) throws {
        precondition(payloadBytes >= 8, "a streamed message's payload starts with its 8-byte index")
        self.handler = handler
        self.eventLoop = eventLoop
        self.pace = pace
        self.expectedCount = expectedCount
        let template = try BenchRequests.streamedMessage(payloadBytes: payloadBytes)
        messageWireBytes = template.readableBytes
        messageHeader = Array(template.readableBytesView.prefix(messageWireBytes - payloadBytes))
        done = eventLoop.makePromise(of: Counts.self)
    }

    /// Completes with the counts when a finite stream ends with OK trailers after exactly `expectedCount`
    /// messages, or when `cancel()` stops an endless one; fails with the reason the stream went wrong.
    var outcome: EventLoopFuture<Counts> { done.futureResult }

    /// The reason the stream failed, if it did.
    private(set) var failure: String?

    /// Opens the stream on the handler's connection with `headers` and the framed `request`.
    func start(headers: HPACKHeaders, request: ByteBuffer) {
        guard let handler else { return failed("connection gone") }
        id = handler.openStream(headers: headers, message: request, reader: self)
        if case .limited = pace, !isOver {
            lastTick = .now()
            // The timer holds the consumer until it is cancelled, which every end of the stream does.
            let consumer = NIOLoopBound(self, eventLoop: eventLoop)
            timer = eventLoop.scheduleRepeatedTask(initialDelay: Self.tick, delay: Self.tick) { _ in
                consumer.value.consumeOnTimer()
            }
        }
    }

    /// Stops an endless stream as a client cancels a call (RST_STREAM CANCEL); the outcome is its counts.
    func cancel() {
        guard !isOver else { return }
        isOver = true
        timer?.cancel()
        reset()
        done.succeed(counts)
    }

    // MARK: From the connection handler

    func received(headers: HPACKHeaders, endStream: Bool) {
        guard !isOver else { return }
        if !headersSeen {
            headersSeen = true
            guard headers.first(name: ":status") == "200" else {
                return fail("HTTP status \(headers.first(name: ":status") ?? "none"), not a gRPC answer", reset: true)
            }
            guard headers.first(name: "content-type")?.hasPrefix("application/grpc") == true else {
                return fail("content-type \(headers.first(name: "content-type") ?? "none")", reset: true)
            }
            if !endStream { return }
        }
        guard endStream else { return fail("headers in the middle of the stream", reset: true) }
        // Trailers (or a trailers-only answer): the stream is over.
        isOver = true
        timer?.cancel()
        guard let status = headers.first(name: "grpc-status") else { return settle("trailers without grpc-status") }
        guard status == "0" else {
            let message = (headers.first(name: "grpc-message") ?? "").removingPercentEncoding ?? ""
            return settle("the stream ended with grpc-status \(status): \(message)")
        }
        guard let expectedCount else {
            return settle("the endless stream ended with OK after \(counts.received) messages")
        }
        guard counts.received == expectedCount, pending.readableBytes == 0 else {
            return settle(
                "the stream ended with OK after \(counts.received) messages (+\(pending.readableBytes) bytes), "
                    + "not \(expectedCount)")
        }
        done.succeed(counts)
    }

    func received(data: inout ByteBuffer, size: Int, endStream: Bool) {
        guard !isOver else { return }
        guard !endStream else { return fail("the stream ended without trailers", reset: false) }
        uncredited += size
        if pending.readableBytes == 0 {
            deframe(&data)
            if data.readableBytes > 0 { pending.writeBuffer(&data) }
        } else {
            pending.writeBuffer(&data)
            deframe(&pending)
            pending.discardReadBytes()
        }
        guard !isOver, pace == .fast else { return }
        counts.consumed = counts.received
        if let handler, let id, uncredited >= handler.streamWindow / 2 {
            handler.windowUpdate(id, uncredited)
            uncredited = 0
        }
    }

    /// The connection closed or the stream was reset before its trailers.
    func failed(_ why: String) {
        guard !isOver else { return }
        isOver = true
        timer?.cancel()
        settle(why)
    }

    // MARK: Internals

    /// Checks and counts every complete message at the front of `buffer`.
    private func deframe(_ buffer: inout ByteBuffer) {
        while !isOver, buffer.readableBytes >= messageWireBytes {
            guard buffer.readableBytesView.starts(with: messageHeader) else {
                let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self) ?? 0
                return fail(
                    "message \(counts.received) is not a \(messageWireBytes - 5)-byte EchoResponse "
                        + "(flag \(buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) ?? 0), length \(length))",
                    reset: true)
            }
            let index = buffer.getInteger(at: buffer.readerIndex + messageHeader.count, as: UInt64.self) ?? 0
            guard index == UInt64(counts.received) else {
                return fail("message \(counts.received) carries index \(index)", reset: true)
            }
            buffer.moveReaderIndex(forwardBy: messageWireBytes)
            counts.received += 1
            if let expectedCount, counts.received > expectedCount {
                return fail("more than the \(expectedCount) messages asked for", reset: true)
            }
        }
    }

    /// A limited consumer's turn: consumes what its rate allows of the messages received, and returns their
    /// bytes to the window.
    private func consumeOnTimer() {
        guard !isOver, case .limited(let rate) = pace, let handler, let id else { return }
        let now = NIODeadline.now()
        let elapsed = Double((now - lastTick).nanoseconds) / 1_000_000_000
        lastTick = now
        tokens = min(tokens + rate * elapsed, max(1, rate * Self.maxSavedUp))
        let taken = min(Int(tokens), counts.received - counts.consumed)
        guard taken > 0 else { return }
        tokens -= Double(taken)
        counts.consumed += taken
        let credit = min(uncredited, taken * messageWireBytes)
        uncredited -= credit
        handler.windowUpdate(id, credit)
    }

    private func fail(_ why: String, reset: Bool) {
        isOver = true
        timer?.cancel()
        if reset { self.reset() }
        settle(why)
    }

    /// Resets the stream; what its window still allowed the server to send goes back to the connection's window.
    private func reset() {
        guard let id, let handler else { return }
        handler.cancel(id, unreceivedWindow: handler.streamWindow - uncredited)
    }

    private func settle(_ why: String) {
        failure = why
        done.fail(BenchError("stream: \(why)"))
    }
}
