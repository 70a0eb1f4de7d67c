import HangarRuntime
import NIOCore
import NIOHPACK
import NIOHTTP2

/// One streamed call on an app's HTTP/2 connection (gRPC proxying), opened by `GRPCClientConnectionHandler`. The
/// request's bytes go out as DATA frames as they are sent; the answer's headers, DATA and trailers go to the
/// observer as they arrive. Used on the connection's event loop only.
///
/// Backpressure both ways. Out: every DATA frame is written with a promise, and `unwritten` counts the bytes
/// handed to the connection that its socket has not taken yet (those `NIOHTTP2Handler` holds while the app's
/// stream or connection window is closed, and those in the channel's buffer); over `writeBufferBytes` the stream is
/// not writable until they fall under half of it. In: while the observer has paused the stream, the answer's events
/// wait here and their bytes are not returned to the app's stream window, so the app stops within one window.
final class GRPCClientStream: AppStream {
    /// Unwritten request bytes over which the stream reports itself full.
    static let writeBufferBytes = 64 * 1024

    /// An answer event held while the stream is paused.
    private enum Event {
        case headers(HPACKHeaders, endStream: Bool)
        case data(ByteBuffer, size: Int, endStream: Bool)
    }

    let id: HTTP2StreamID
    private weak var handler: GRPCClientConnectionHandler?
    /// The relay that owns this stream's caller side; weak, as it owns this stream.
    private weak var observer: (any AppStreamObserver)?
    private let eventLoop: any EventLoop
    /// The last request message, held back until the next one, the end of the request, or the end of the event
    /// loop's turn, so that a unary-shaped call goes out as HEADERS and one DATA frame with END_STREAM.
    private var held: ByteBuffer?
    /// Waiting for `flushHeld()` at the end of the event loop's turn.
    var awaitingFlush = false
    private var unwritten = 0
    private var wantsWritable = false
    private var requestEnded = false
    private var paused = false
    private var inbox = CircularBuffer<Event>()
    private var headersSeen = false
    /// The app's END_STREAM arrived: no window is owed any more.
    private var answerEnded = false
    /// Answer bytes delivered and not yet returned to the app's stream window.
    private var unacked = 0
    var timeout: Scheduled<Void>?
    private(set) var isDone = false

    init(
        id: HTTP2StreamID, handler: GRPCClientConnectionHandler, observer: any AppStreamObserver,
        eventLoop: any EventLoop
    ) {
        self.id = id
        self.handler = handler
        self.observer = observer
        self.eventLoop = eventLoop
    }

    // MARK: AppStream (from the relay)

    var isWritable: Bool { !isDone && unwritten < Self.writeBufferBytes }

    func send(_ bytes: ByteBuffer) {
        guard !isDone, !requestEnded else { return }
        if let held { write(held, endStream: false) }
        held = bytes
        unwritten += bytes.readableBytes
        if unwritten >= Self.writeBufferBytes { wantsWritable = true }
        handler?.flushSoon(self)
    }

    func end() {
        guard !isDone, !requestEnded else { return }
        requestEnded = true
        let last = held ?? ByteBuffer()
        held = nil
        write(last, endStream: true)
        handler?.flushSoon(nil)
    }

    func cancel() {
        guard !isDone else { return }
        close()
        handler?.reset(id, .cancel)
    }

    func pause() {
        paused = true
    }

    func resume() {
        guard paused else { return }
        paused = false
        while !paused, !isDone, let event = inbox.popFirst() { handle(event) }
    }

    // MARK: From the connection handler

    /// Writes the held message (the event loop's turn ends).
    func flushHeld() {
        awaitingFlush = false
        guard !isDone, let held else { return }
        self.held = nil
        write(held, endStream: false)
    }

    func received(headers: HPACKHeaders, endStream: Bool) {
        if endStream { answerEnded = true }
        receive(.headers(headers, endStream: endStream))
    }

    func received(data: ByteBuffer, size: Int, endStream: Bool) {
        if endStream { answerEnded = true }
        receive(.data(data, size: size, endStream: endStream))
    }

    /// The app reset the stream, the stream closed, or the connection ended, before the answer's trailers. Once
    /// the answer's END_STREAM has arrived the answer is whole, and the stream closing is its normal end: what the
    /// caller has not taken yet (held while it is paused) is still delivered, trailers last.
    func failed(_ why: String) {
        guard !isDone, !answerEnded else { return }
        close()
        observer?.appStream(finished: .failure(AppChannelError.unreachable(why)))
    }

    /// The deadline passed: the app's stream is cancelled.
    func expired() {
        guard !isDone else { return }
        close()
        handler?.reset(id, .cancel)
        observer?.appStream(finished: .failure(AppChannelError.deadlineExceeded))
    }

    // MARK: Internals

    private func receive(_ event: Event) {
        guard !isDone else { return }
        if paused || !inbox.isEmpty {
            inbox.append(event)
        } else {
            handle(event)
        }
    }

    private func handle(_ event: Event) {
        switch event {
        case .headers(let headers, let endStream):
            if !headersSeen {
                headersSeen = true
                guard headers.first(name: ":status") == "200" else {
                    let status = headers.first(name: ":status") ?? "none"
                    return violation("HTTP status \(status), not a gRPC answer", reset: !endStream)
                }
                if !endStream {
                    observer?.appStream(headers: Self.fields(headers))
                    return
                }
            }
            guard endStream else { return violation("headers in the middle of the answer", reset: true) }
            guard headers.first(name: "grpc-status") != nil else {
                return violation("no grpc-status in the trailers", reset: false)
            }
            // The app answered before the request ended: the request's side of the stream is closed too.
            let stopRequest = !requestEnded
            close()
            if stopRequest { handler?.reset(id, .noError) }
            observer?.appStream(finished: .success(Self.fields(headers)))
        case .data(let data, let size, let endStream):
            guard !endStream else { return violation("the answer ended without trailers", reset: false) }
            observer?.appStream(data: data)
            guard !isDone else { return }
            unacked += size
            if !answerEnded && unacked >= GRPCClientConnectionHandler.streamWindow / 2 {
                handler?.windowUpdate(id, unacked)
                unacked = 0
            }
        }
    }

    private func violation(_ why: String, reset: Bool) {
        close()
        if reset { handler?.reset(id, .cancel) }
        observer?.appStream(finished: .failure(AppChannelError.protocolViolation(why)))
    }

    /// The stream is over for this side: nothing more is sent or delivered.
    private func close() {
        isDone = true
        held = nil
        inbox.removeAll()
        timeout?.cancel()
        timeout = nil
        handler?.forget(id)
    }

    private func write(_ bytes: ByteBuffer, endStream: Bool) {
        guard let handler else { return }
        let size = bytes.readableBytes
        let promise = eventLoop.makePromise(of: Void.self)
        handler.write(id, data: bytes, endStream: endStream, promise: promise)
        promise.futureResult.assumeIsolated().whenComplete { _ in self.written(size) }
    }

    private func written(_ size: Int) {
        unwritten -= size
        if wantsWritable, !isDone, unwritten < Self.writeBufferBytes / 2 {
            wantsWritable = false
            observer?.appStreamWritable()
        }
    }

    /// Hop-by-hop fields never relayed, besides pseudo-headers.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
    ]

    /// A header block as the runtime relays it: without pseudo-headers and hop-by-hop fields.
    static func fields(_ headers: HPACKHeaders) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = []
        fields.reserveCapacity(headers.count)
        for (name, value, _) in headers where !name.hasPrefix(":") && !hopByHop.contains(name) {
            fields.append((name, value))
        }
        return fields
    }
}
