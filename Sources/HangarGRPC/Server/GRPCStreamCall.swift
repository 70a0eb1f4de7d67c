public import NIOCore
package import SwiftProtobuf

/// One streaming call (server-streaming or bidirectional) as its method sees it. Used on the call's event loop
/// only, like a channel handler: the method sets the callbacks when it is handed the call, then sends messages and
/// finishes with a status whenever it likes.
///
/// Backpressure both ways: `send` says when the call's queue of unsent responses is full (the client is not
/// reading), and `onWritable` when it may send again; request messages are delivered as they are deframed, and
/// their bytes return to the client's flow-control window once delivered, so a method that `pause()`s stops the
/// client within one window.
///
/// `@_spi(Benchmarks)`: the benchmark package's echo server sends a server stream through it; not an API.
@_spi(Benchmarks) public final class GRPCStreamCall {
    /// Who calls and on which event loop.
    package let context: GRPCCallContext
    /// A request message, without its 5-byte prefix, as soon as it is complete.
    package var onMessage: (ByteBuffer) -> Void = { _ in }
    /// The client finished sending (after its last message was delivered).
    package var onEnd: () -> Void = {}
    /// The call ended without the method finishing it: reset by the client, past its deadline, or its connection
    /// gone. Nothing sent later reaches the client.
    package var onCancel: () -> Void = {}
    /// The queue of unsent responses drained after `send` returned false.
    @_spi(Benchmarks) public var onWritable: () -> Void = {}
    /// The server is draining this call's connection (shutdown, upgrade): a call that could last indefinitely
    /// (a subscription) should end, so that the client reconnects, now to the successor. Others may ignore it.
    package var onDrain: () -> Void = {}

    /// Whether the call is over: finished by the method or cancelled.
    @_spi(Benchmarks) public private(set) var isDone = false
    /// Whether `onMessage` deliveries are held back.
    package private(set) var isPaused = false
    /// Messages reach `onMessage` with their 5-byte prefix, as they came (gRPC proxying relays them undecoded).
    /// Set when the method is handed the call, before any message arrives.
    package var receivesFramed = false

    private let stream: UInt32
    private weak var handler: GRPCConnectionHandler?
    private var inbox: [ByteBuffer] = []
    /// Wire bytes (prefix included) of the messages in `inbox`: what the client's window is not credited for.
    private(set) var undeliveredBytes = 0
    private var ended = false

    init(context: GRPCCallContext, stream: UInt32, handler: GRPCConnectionHandler) {
        self.context = context
        self.stream = stream
        self.handler = handler
    }

    /// Whether the client is taking responses as fast as they are sent.
    package var isWritable: Bool { !isDone && (handler?.isWritable(stream) ?? false) }

    /// Runs `body`, and sends what it sends in one write at its end rather than one write per message (on the
    /// connection: other calls' writes meanwhile wait for the same flush).
    package func withCorkedWrites(_ body: () -> Void) {
        guard let handler else { return body() }
        handler.corked(body)
    }

    /// Sends a response message; false when the call's queue is full (the message is queued all the same; wait for
    /// `onWritable` before sending more) or the call is over.
    @discardableResult
    package func send(_ message: some SwiftProtobuf.Message) throws -> Bool {
        try send(framed: GRPCService.frame(message))
    }

    /// Sends an already length-prefixed message.
    @discardableResult
    @_spi(Benchmarks) public func send(framed message: ByteBuffer) -> Bool {
        guard !isDone, let handler else { return false }
        return handler.send(stream, message)
    }

    /// Sends the response head: `:status 200`, the content type (`application/grpc` unless `fields` name one) and
    /// `fields` (names in lower case, no pseudo-headers). Without it, the first `send` sends the plain head.
    package func sendHeaders(_ fields: [(name: String, value: String)]) {
        guard !isDone else { return }
        handler?.sendHeaders(stream, fields)
    }

    /// Ends the call with trailers made elsewhere (relayed from an app: `grpc-status` and the rest, no
    /// pseudo-headers).
    @_spi(Benchmarks) public func finish(trailers fields: [(name: String, value: String)]) {
        guard !isDone else { return }
        isDone = true
        releaseCallbacks()
        handler?.finish(stream, trailers: fields)
    }

    /// Ends the call with `status` (OK when nil) in the trailers.
    package func finish(_ status: GRPCStatus? = nil) {
        guard !isDone else { return }
        isDone = true
        releaseCallbacks()
        handler?.finish(stream, status)
    }

    /// Holds back request messages (and the client's window) until `resume()`.
    package func pause() {
        isPaused = true
    }

    package func resume() {
        guard isPaused else { return }
        isPaused = false
        deliver()
    }

    // MARK: From the connection handler

    /// Request messages just deframed; the client ended its side when `end`.
    func received(_ messages: [ByteBuffer], end: Bool) {
        let prefix = receivesFramed ? 0 : 5
        for message in messages {
            undeliveredBytes += prefix + message.readableBytes
            inbox.append(message)
        }
        if end { ended = true }
        deliver()
    }

    func cancelled() {
        guard !isDone else { return }
        isDone = true
        inbox.removeAll()
        let onCancel = onCancel
        releaseCallbacks()
        onCancel()
    }

    /// The callbacks often capture the call: dropping them when it is over breaks that cycle.
    private func releaseCallbacks() {
        onMessage = { _ in }
        onEnd = {}
        onCancel = {}
        onWritable = {}
        onDrain = {}
    }

    func drained() {
        if !isDone { onDrain() }
    }

    func writable() {
        if !isDone { onWritable() }
    }

    private func deliver() {
        while !isPaused, !isDone, !inbox.isEmpty {
            let message = inbox.removeFirst()
            undeliveredBytes -= (receivesFramed ? 0 : 5) + message.readableBytes
            handler?.delivered(stream)
            onMessage(message)
        }
        if ended, inbox.isEmpty, !isPaused, !isDone {
            ended = false
            onEnd()
        }
    }
}
