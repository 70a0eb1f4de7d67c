import Foundation
import NIOCore
import NIOHPACK
import NIOHTTP2

/// One streaming subscription (`SubscribeTopicEventsAlpha1`, bidirectional) on a `GRPCClientHandler`'s connection,
/// as an app's SDK holds it: it sends the initial request, waits for the one `initial_response`, then takes every
/// event as it arrives and, unless told never to answer, answers SUCCESS at once on the same stream. For every event
/// it records when it arrived and the stamp its data carries (the instant its publish call started, see
/// `BenchRequests.stamp`), so publish → delivery is measured on the client's one monotonic clock.
///
/// It reads as fast as events come (their bytes go back to the stream's window once half the window is owed): a
/// subscriber that never answers still reads, and only hangard's in-flight bound holds its events back. A response
/// that is not gRPC, a message that is not a `SubscribeTopicEventsResponseAlpha1`, or any end of the stream before
/// `cancel()` fails the subscriber with the reason. Used on the connection's event loop only.
final class GRPCSubscriber: GRPCStreamReader {
    /// How the subscriber answers the events it gets.
    enum Answer: Sendable {
        /// SUCCESS as soon as the event has arrived.
        case success
        /// Never: every event stays in flight until its lease ends (the noisy neighbour's subscriber).
        case never
    }

    /// One delivered event: the stamp it carried and the instant it arrived (monotonic nanoseconds).
    struct Arrival: Sendable {
        var stamp: UInt64
        var arrived: UInt64
    }

    let answer: Answer
    private weak var handler: GRPCClientHandler?
    private let ready: EventLoopPromise<Void>
    private var id: HTTP2StreamID?
    private var pending = ByteBuffer()
    private var headersSeen = false
    private var initialSeen = false
    private var uncredited = 0
    private var isOver = false
    private var arrivals: [Arrival] = []
    /// Events received, answered or not.
    private(set) var received = 0
    /// Events whose data carried no stamp (not published by the bench).
    private(set) var unstamped = 0
    /// The reason the subscription failed, if it did.
    private(set) var failure: String?

    init(handler: GRPCClientHandler, eventLoop: any EventLoop, answer: Answer) {
        self.handler = handler
        self.answer = answer
        ready = eventLoop.makePromise(of: Void.self)
        arrivals.reserveCapacity(1 << 16)
    }

    /// Opens the subscription to `topic` of component `pubsub`; the future completes when hangard's
    /// `initial_response` has arrived (the subscription is then in place: what is published from now on is
    /// delivered), and fails if the stream fails first.
    func start(pubsub: String, topic: String) -> EventLoopFuture<Void> {
        guard let handler else {
            failed("connection gone")
            return ready.futureResult
        }
        do {
            let message = try BenchRequests.subscribeInitial(pubsub: pubsub, topic: topic)
            id = handler.openStream(
                headers: GRPCClientHandler.requestHeaders(path: BenchRequests.subscribePath), message: message,
                endStream: false, reader: self)
        } catch {
            fail("cannot encode the initial request: \(error)", reset: false)
        }
        return ready.futureResult
    }

    /// The arrivals so far whose stamp is before `until`, removed from the record (later ones stay).
    func take(before until: UInt64) -> [Arrival] {
        let taken = arrivals.filter { $0.stamp < until }
        arrivals.removeAll { $0.stamp < until }
        return taken
    }

    /// Ends the subscription as a client cancels a call (RST_STREAM CANCEL): hangard gives its in-flight events
    /// back to the topic.
    func cancel() {
        guard !isOver else { return }
        isOver = true
        if let id, let handler { handler.cancel(id, unreceivedWindow: handler.streamWindow - uncredited) }
        if !initialSeen { ready.fail(BenchError("subscription cancelled before its initial response")) }
    }

    // MARK: GRPCStreamReader

    func received(headers: HPACKHeaders, endStream: Bool) {
        guard !isOver else { return }
        if !headersSeen {
            headersSeen = true
            guard headers.first(name: ":status") == "200" else {
                return fail("HTTP status \(headers.first(name: ":status") ?? "none"), not a gRPC answer", reset: true)
            }
            if !endStream { return }
        }
        guard endStream else { return fail("headers in the middle of the stream", reset: true) }
        isOver = true
        let status = headers.first(name: "grpc-status") ?? "none"
        let message = (headers.first(name: "grpc-message") ?? "").removingPercentEncoding ?? ""
        settle("the subscription ended with grpc-status \(status): \(message)")
    }

    func received(data: inout ByteBuffer, size: Int, endStream: Bool) {
        guard !isOver else { return }
        guard !endStream else { return fail("the stream ended without trailers", reset: false) }
        uncredited += size
        pending.writeBuffer(&data)
        deframe()
        pending.discardReadBytes()
        if !isOver, let handler, let id, uncredited >= handler.streamWindow / 2 {
            handler.windowUpdate(id, uncredited)
            uncredited = 0
        }
    }

    func failed(_ why: String) {
        guard !isOver else { return }
        isOver = true
        settle(why)
    }

    // MARK: Internals

    /// Takes every complete message at the front of `pending`.
    private func deframe() {
        while !isOver, pending.readableBytes >= 5 {
            let flag = pending.getInteger(at: pending.readerIndex, as: UInt8.self) ?? 0
            let length = Int(pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self) ?? 0)
            guard flag == 0 else { return fail("a compressed message (flag \(flag))", reset: true) }
            guard pending.readableBytes >= 5 + length else { return }
            pending.moveReaderIndex(forwardBy: 5)
            let bytes = pending.readSlice(length: length)!
            do {
                try handle(
                    Dapr_Proto_Runtime_V1_SubscribeTopicEventsResponseAlpha1(
                        serializedBytes: Array(bytes.readableBytesView)))
            } catch {
                return fail("a message that is not a SubscribeTopicEventsResponseAlpha1: \(error)", reset: true)
            }
        }
    }

    private func handle(_ response: Dapr_Proto_Runtime_V1_SubscribeTopicEventsResponseAlpha1) throws {
        switch response.subscribeTopicEventsResponseType {
        case .initialResponse:
            guard !initialSeen else { return fail("a second initial_response", reset: true) }
            initialSeen = true
            ready.succeed()
        case .eventMessage(let event):
            guard initialSeen else { return fail("an event before the initial_response", reset: true) }
            let now = NIODeadline.now().uptimeNanoseconds
            received += 1
            if let stamp = BenchRequests.stamp(of: event.data) {
                arrivals.append(Arrival(stamp: stamp, arrived: now))
            } else {
                unstamped += 1
            }
            if answer == .success, let handler, let id {
                handler.send(id, message: try BenchRequests.eventProcessed(id: event.id))
            }
        case nil:
            fail("a response with neither initial_response nor event_message", reset: true)
        }
    }

    private func fail(_ why: String, reset: Bool) {
        isOver = true
        if reset, let id, let handler { handler.cancel(id, unreceivedWindow: handler.streamWindow - uncredited) }
        settle(why)
    }

    private func settle(_ why: String) {
        failure = why
        if !initialSeen { ready.fail(BenchError("subscription: \(why)")) }
    }
}
