package import NIOCore
package import NIOHTTP1

/// What `HTTPConnectionHandler` does for the exchange it drives: read more of the request, and take the connection
/// back once the response has ended.
protocol HTTPExchangeOwner: AnyObject {
    /// The exchange has taken every part of the request read so far: the socket may be read again.
    func exchangeWantsRead(_ exchange: HTTPExchange, context: ChannelHandlerContext)
    /// The response's end has been written (`ended` completes once it is flushed).
    func exchangeDidEnd(_ exchange: HTTPExchange, context: ChannelHandlerContext, ended: EventLoopFuture<Void>)
}

/// A request whose body is read, and whose response is written, as they go (`HTTPStart.stream`): the request's
/// body is read from the socket only as fast as the responder takes it (`nextBodyPart`), at most `limit` bytes, and
/// the response's parts are written as the responder produces them, each part's future completing once the socket
/// can take more. Neither side is ever held whole: a slow reader on either side slows the other down instead.
///
/// Its methods may be called from any thread; they run on the connection's event loop.
package final class HTTPExchange: @unchecked Sendable {  // its mutable state is only touched on `eventLoop`
    /// Why an exchange was cut short.
    package enum Cancellation: Error, Sendable {
        /// The connection closed (the caller went away, or a write failed) before the response ended.
        case closed
        /// The request's body is over `limit`; no more of it is read. The response (when none has started yet) may
        /// still be written, and the connection then closes.
        case tooLarge
    }

    package let head: HTTPRequestHead
    package let eventLoop: any EventLoop
    /// The most request body bytes that are read.
    package let limit: Int
    /// The request's `content-length`, nil when it has none.
    package let declaredLength: Int?
    /// Whether the request has a body at all (a `content-length` above zero, or a chunked body).
    package let hasBody: Bool

    // The connection's side, set while the exchange runs.
    private var context: ChannelHandlerContext?
    private var owner: (any HTTPExchangeOwner)?
    /// Whether the connection may serve another request once this response ends (the head's `connection` asks for
    /// it, the listener is not draining, and the response's framing does not need a close).
    private var keepAlive: Bool

    // The request.
    private var parts = CircularBuffer<ByteBuffer>()
    private var received = 0
    private var continueNeeded: Bool
    private var demand: EventLoopPromise<ByteBuffer?>?
    private(set) var requestEnded = false
    private(set) var cancellation: Cancellation?
    private var cancelHandlers: [@Sendable (Cancellation) -> Void] = []

    // The response.
    private var started = false
    private var responseEnded = false
    private var writable: EventLoopPromise<Void>?

    init(
        head: HTTPRequestHead, limit: Int, keepAlive: Bool, context: ChannelHandlerContext,
        owner: any HTTPExchangeOwner
    ) {
        self.head = head
        self.eventLoop = context.eventLoop
        self.limit = limit
        self.keepAlive = keepAlive
        self.context = context
        self.owner = owner
        let declared = head.headers.first(name: "content-length").flatMap { Int($0) }
        self.declaredLength = declared
        self.hasBody =
            (declared ?? 0) > 0
            || head.headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
        self.continueNeeded =
            hasBody && head.version.minor >= 1
            && head.headers.first(name: "expect")?.lowercased() == "100-continue"
    }

    // MARK: The responder's side

    /// The next part of the request's body; nil once it has all been read. Fails with a `Cancellation` when the
    /// exchange was cut short. Call it again only once the previous future has completed.
    package func nextBodyPart() -> EventLoopFuture<ByteBuffer?> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.nextBodyPart() } }
        if let part = parts.popFirst() {
            if parts.isEmpty, let context { owner?.exchangeWantsRead(self, context: context) }
            return eventLoop.makeSucceededFuture(part)
        }
        if let cancellation { return eventLoop.makeFailedFuture(cancellation) }
        if requestEnded { return eventLoop.makeSucceededFuture(nil) }
        // The response has ended: the rest of the body is the connection's to drop, no longer the responder's.
        guard let context else { return eventLoop.makeFailedFuture(Cancellation.closed) }
        if continueNeeded, !started {
            // The caller waits for this before it sends a body it announced with `expect: 100-continue`.
            continueNeeded = false
            context.writeAndFlush(
                NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: head.version, status: .continue))),
                promise: nil)
        }
        let promise = demand ?? eventLoop.makePromise(of: ByteBuffer?.self)
        demand = promise
        owner?.exchangeWantsRead(self, context: context)
        return promise.futureResult
    }

    /// Calls `handler` once if the exchange is cut short (at once if it already was). Handlers run in the order
    /// they were added, before the pending `nextBodyPart` and `writeBodyPart` futures fail.
    package func whenCancelled(_ handler: @escaping @Sendable (Cancellation) -> Void) {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.whenCancelled(handler) } }
        if let cancellation {
            handler(cancellation)
        } else if !responseEnded {
            cancelHandlers.append(handler)
        }
    }

    /// Whether the response's head has been written (an error can then no longer be answered with a status).
    /// Read it on `eventLoop`.
    package var hasStartedResponse: Bool {
        eventLoop.preconditionInEventLoop()
        return started
    }

    /// Writes the response's head. Without a `content-length` the body is sent chunked (HTTP/1.1) or delimited by
    /// closing the connection (HTTP/1.0).
    package func writeHead(status: HTTPResponseStatus, headers: HTTPHeaders) {
        guard eventLoop.inEventLoop else {
            return eventLoop.execute { self.writeHead(status: status, headers: headers) }
        }
        guard !started, let context, cancellation != .closed else { return }
        started = true
        var head = HTTPResponseHead(version: self.head.version, status: status, headers: headers)
        let framed = head.headers.contains(name: "content-length") || head.version.minor >= 1
        if !framed || cancellation != nil { keepAlive = false }
        if !keepAlive {
            head.headers.replaceOrAdd(name: "connection", value: "close")
        } else if head.version.minor == 0 {
            head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.head(head)), promise: nil)
    }

    /// Writes a part of the response's body. The future completes once the socket can take more (at once while it
    /// can); it fails if the exchange was closed.
    package func writeBodyPart(_ part: ByteBuffer) -> EventLoopFuture<Void> {
        guard eventLoop.inEventLoop else { return eventLoop.flatSubmit { self.writeBodyPart(part) } }
        guard started, !responseEnded, let context, cancellation != .closed else {
            return eventLoop.makeFailedFuture(cancellation ?? .closed)
        }
        context.writeAndFlush(NIOAny(HTTPServerResponsePart.body(.byteBuffer(part))), promise: nil)
        if context.channel.isWritable { return eventLoop.makeSucceededVoidFuture() }
        let promise = writable ?? eventLoop.makePromise(of: Void.self)
        writable = promise
        return promise.futureResult
    }

    /// Ends the response; the connection then serves its next request (or closes).
    package func end() {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.end() } }
        guard started, !responseEnded, let context, cancellation != .closed else { return }
        responseEnded = true
        cancelHandlers = []
        let ended = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        release()?.exchangeDidEnd(self, context: context, ended: ended)
    }

    /// Writes a whole response (head, body with its `content-length`, end).
    package func respond(_ response: HTTPResponse) {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.respond(response) } }
        var headers = response.headers
        headers.replaceOrAdd(name: "content-length", value: String(response.body?.readableBytes ?? 0))
        writeHead(status: response.status, headers: headers)
        if let body = response.body, body.readableBytes > 0 { _ = writeBodyPart(body) }
        end()
    }

    /// Closes the connection: the response cannot be completed (its head is out, and its body failed).
    package func abort() {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.abort() } }
        context?.close(promise: nil)
    }

    // MARK: The connection's side (on the event loop)

    /// Whether the socket should be read for this request: its body is not all read and none of it waits.
    var wantsRead: Bool { !requestEnded && cancellation == nil && parts.isEmpty }

    /// A part of the request's body; false when it takes the body over `limit` (the part is dropped).
    func receive(_ part: ByteBuffer) -> Bool {
        guard cancellation == nil else { return true }
        received += part.readableBytes
        guard received <= limit else { return false }
        if let demand {
            self.demand = nil
            demand.succeed(part)
        } else {
            parts.append(part)
        }
        return true
    }

    /// The request's end.
    func receiveEnd() {
        requestEnded = true
        if let demand, parts.isEmpty {
            self.demand = nil
            demand.succeed(nil)
        }
    }

    /// The caller's socket can take more (or no longer can).
    func writabilityChanged(isWritable: Bool) {
        if isWritable, let writable {
            self.writable = nil
            writable.succeed()
        }
    }

    /// Cuts the exchange short: its handlers run first (the responder may still answer a `.tooLarge` request),
    /// then the pending futures fail. A response that has not ended by then is abandoned and the connection closed.
    func cancel(_ reason: Cancellation) {
        guard cancellation == nil, !responseEnded else { return }
        cancellation = reason
        parts.removeAll()
        let handlers = cancelHandlers
        cancelHandlers = []
        for handler in handlers { handler(reason) }
        demand?.fail(reason)
        demand = nil
        writable?.fail(reason)
        writable = nil
        if !responseEnded {
            context?.close(promise: nil)
            _ = release()
        }
    }

    /// Forgets the connection (it no longer belongs to this exchange); returns its owner.
    private func release() -> (any HTTPExchangeOwner)? {
        defer {
            owner = nil
            context = nil
        }
        return owner
    }

    /// Whether the connection may serve another request after this one (read by the owner once the response ended).
    var mayKeepAlive: Bool { keepAlive && cancellation == nil }
}
