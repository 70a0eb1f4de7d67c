package import HangarComponents
package import HangarRuntime
import HangarTransport
package import NIOCore
package import NIOHTTP1

/// A complete HTTP/1.1 response: the status, the headers the responder sets (the connection handler adds
/// `content-length` and `connection`) and the body.
package struct HTTPResponse: Sendable {
    package var status: HTTPResponseStatus
    package var headers: HTTPHeaders
    package var body: ByteBuffer?

    package init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// What to do with a request once its head is read.
package enum HTTPStart<Call> {
    /// Answer now; the body, if any, is read and discarded.
    case respond(HTTPResponse)
    /// Read the body, at most `limit` bytes, then call `respond(to:…)`. A body over the limit is answered with
    /// `tooLarge(call)`, and the connection is closed rather than read to its end.
    case readBody(Call, limit: Int)
    /// Hand the request to `stream(_:exchange:)` at once: its body is read as the responder takes it (at most `limit`
    /// bytes) and its response written as the responder produces it (`HTTPExchange`). A declared `content-length`
    /// over the limit is answered with `tooLarge(call)` before the exchange starts.
    case stream(Call, limit: Int)
}

/// An HTTP/1.1 application behind `HTTPConnectionHandler`. Every method is called on the connection's event loop.
package protocol HTTPResponder: Sendable {
    /// What a request carries from its head to its response (its route, its admission).
    associatedtype Call

    /// Decides from the head alone: refuse, answer, or read the body.
    func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Call>

    /// The response to a request whose body (empty when there was none) has been read: at once, or later.
    func respond(to call: Call, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
        -> Eventual<HTTPResponse>

    /// The response to a request whose body is over its limit; `respond` is not called for it.
    func tooLarge(_ call: Call, declaredLength: Int?) -> HTTPResponse

    /// Runs a streamed request (`HTTPStart.stream`): reads its body from `exchange` and answers through it, ending
    /// the response or aborting it; `exchange.whenCancelled` tells it when the caller goes away or the body is over
    /// its limit.
    func stream(_ call: Call, exchange: HTTPExchange)

    /// The connection closed before the body was read: `respond` will not be called.
    func abandon(_ call: Call)

    /// The account a buffered body of `call` counts against (its tenant's `BufferAccount`); nil: not counted.
    func buffers(_ call: Call) -> BufferAccount?

    /// The response to a request whose body could not be buffered (`refusal`); `respond` is not called for it.
    func refused(_ call: Call, _ refusal: BufferAccount.Refusal) -> HTTPResponse
}

extension HTTPResponder {
    /// Bodies are not counted unless the responder says against what.
    package func buffers(_ call: Call) -> BufferAccount? { nil }

    package func refused(_ call: Call, _ refusal: BufferAccount.Refusal) -> HTTPResponse {
        HTTPResponse(status: .serviceUnavailable, body: ByteBuffer(string: "the request could not be buffered"))
    }

    /// A responder that never answers `HTTPStart.stream` is never asked to stream; were it asked, it says so.
    package func stream(_ call: Call, exchange: HTTPExchange) {
        exchange.respond(
            HTTPResponse(status: .notImplemented, body: ByteBuffer(string: "this endpoint does not stream requests")))
    }
}

/// One HTTP/1.1 connection, behind NIOHTTP1's decoder and encoder: reads each request's head and body, hands them
/// to the responder, writes its response. Everything runs on the connection's event loop; a responder whose work
/// does not block answers in the same read, with no task, future or thread hop.
///
/// It also does what NIOHTTP1's pipelining and error handlers would, without two more handlers on every request's
/// path: pipelined requests wait (and the socket is not read) while a response is pending, and a request NIOHTTP1
/// cannot parse is answered with 400 before the connection closes.
///
/// A streamed request (`HTTPStart.stream`) is driven by its `HTTPExchange`: the socket is read only while the exchange
/// has taken every part read so far, and the connection is handed back when its response ends.
///
/// Timeouts (`ConnectionTimeouts`), against slow and stalled clients (slowloris): a request head must be complete
/// within `header` of its first bytes, a body (read, discarded or streamed) must not go without progress (at least
/// `progressBytes` bytes, so that a trickle counts as a stall) for `progress` — both answered 408 and the connection
/// closed — and a connection with no request for `idle` is
/// closed. One timer per connection, re-armed only when a deadline comes earlier than the armed one: a request that
/// arrives whole costs no timer operation.
final class HTTPConnectionHandler<Responder: HTTPResponder>: ChannelDuplexHandler, HTTPExchangeOwner {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between requests.
        case idle
        /// Reading the body of an accepted request.
        case reading(HTTPRequestHead, Responder.Call, limit: Int, body: ByteBuffer?)
        /// Answered early (refused or not found): the rest of the request is discarded.
        case discarding
        /// The responder is working on the request.
        case responding
        /// A streamed request: its exchange reads the body and writes the response.
        case streaming(HTTPExchange)
        /// The connection closes once the current write completes.
        case closing
    }

    private let responder: Responder
    private var state = State.idle
    private var isReading = false
    private var needsFlush = false
    /// Set when the listener drains: the connection closes after the response in progress, or at once when idle.
    private var draining = false
    /// Request parts that arrived while a response was pending (pipelining), handled once it is written.
    private var queued = CircularBuffer<HTTPServerRequestPart>()
    /// A read was asked for while a response was pending; it is issued once the response is written.
    private var readDeferred = false
    /// Whether a response has been started since the last request began (a parse error then only closes).
    private var responseStarted = false
    private let headerTimeout: TimeAmount?
    private let progressTimeout: TimeAmount?
    private let progressBytes: Int
    private let idleTimeout: TimeAmount?
    /// When bytes of a request head began to arrive (a read that gave NIOHTTP1 no complete part while idle).
    private var headSince: NIODeadline?
    /// When the current request last made progress: its head, then every `progressBytes` of its body.
    private var lastProgress = NIODeadline.uptimeNanoseconds(0)
    /// Body bytes received since `lastProgress`.
    private var bytesSinceProgress = 0
    /// When the connection last read or answered anything.
    private var lastActivity = NIODeadline.uptimeNanoseconds(0)
    /// Whether the read in progress gave any request part.
    private var partsThisRead = false
    private var timer: Scheduled<Void>?
    private var timerDeadline = NIODeadline.distantFuture
    /// Body bytes of the current request reserved in its tenant's `BufferAccount`, until its response is built.
    private var charged = 0
    private var chargedTo: BufferAccount?
    /// Response bytes the client has not read, counted against its tenant (`noteUnread`).
    private var unread = HeldBytes()
    /// The account of the last request's tenant: what unread responses count against.
    private var lastAccount: BufferAccount?
    static var unreadFloor: Int { 256 * 1024 }

    init(responder: Responder, timeouts: ConnectionTimeouts = ConnectionTimeouts()) {
        self.responder = responder
        headerTimeout = timeouts.header.map(TimeAmount.init)
        progressTimeout = timeouts.progress.map(TimeAmount.init)
        progressBytes = timeouts.progressBytes
        idleTimeout = timeouts.idle.map(TimeAmount.init)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        lastActivity = context.eventLoop.now
        armTimer(context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        partsThisRead = true
        let part = unwrapInboundIn(data)
        switch state {
        case .responding:
            queued.append(part)
        case .streaming(let exchange) where exchange.requestEnded:
            queued.append(part)  // the next request, pipelined behind a response still being streamed
        default:
            // A new request waits while the client does not read what was answered (the channel is not writable):
            // a pipelining client that never reads holds one response, not one per request it sent.
            if queued.isEmpty && (context.channel.isWritable || !part.isHead) {
                handle(context, part)
            } else {
                queued.append(part)
            }
        }
    }

    private func handle(_ context: ChannelHandlerContext, _ part: HTTPServerRequestPart) {
        switch part {
        case .head(let head): onHead(context, head)
        case .body(let chunk): onBody(context, chunk)
        case .end: onEnd(context)
        }
    }

    /// Handles pipelined parts that waited for the response just written, then lets the socket be read again.
    private func resume(_ context: ChannelHandlerContext) {
        while let next = queued.first {
            if case .idle = state, next.isHead, !context.channel.isWritable { return }  // see `channelRead`
            switch state {
            case .responding, .closing, .streaming: return
            case .idle, .reading, .discarding: handle(context, queued.removeFirst())
            }
        }
        if readDeferred, case .idle = state, context.channel.isWritable {
            readDeferred = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        switch state {
        case .responding:
            readDeferred = true
        case .streaming(let exchange):
            // Backpressure: the caller's socket is read only once the exchange has taken what was read before.
            if exchange.wantsRead && queued.isEmpty { context.read() } else { readDeferred = true }
        case .idle:
            // The next request is not read while the client does not read its answers (the channel is not
            // writable), nor while parts read before wait.
            if queued.isEmpty && context.channel.isWritable { context.read() } else { readDeferred = true }
        case .reading, .discarding, .closing:
            if queued.isEmpty { context.read() } else { readDeferred = true }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        let now = context.eventLoop.now
        lastActivity = now
        if !partsThisRead, headSince == nil, case .idle = state { headSince = now }
        partsThisRead = false
        if needsFlush {
            needsFlush = false
            context.flush()
            noteUnread(context)
        }
        armTimer(context)
        context.fireChannelReadComplete()
    }

    // MARK: Timeouts

    /// When the current state times out, if it can.
    private var deadline: NIODeadline? {
        switch state {
        case .idle:
            if let headSince { return headerTimeout.map { headSince + $0 } }
            return idleTimeout.map { lastActivity + $0 }
        case .reading, .discarding:
            return progressTimeout.map { lastProgress + $0 }
        case .streaming(let exchange):
            guard !exchange.requestEnded, exchange.wantsRead else { return nil }
            return progressTimeout.map { lastProgress + $0 }
        case .responding, .closing:
            return nil
        }
    }

    /// Makes sure the timer fires by the current deadline: a timer armed for earlier is kept (it re-checks).
    private func armTimer(_ context: ChannelHandlerContext) {
        guard let deadline, deadline < timerDeadline || timer == nil else { return }
        timer?.cancel()
        timerDeadline = deadline
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.timerFired(context)
        }
    }

    private func timerFired(_ context: ChannelHandlerContext) {
        timer = nil
        timerDeadline = .distantFuture
        guard let deadline else { return }
        guard context.eventLoop.now >= deadline else { return armTimer(context) }
        switch state {
        case .idle where headSince != nil:
            timedOut(context, "the request headers were not complete within \(Self.describe(headerTimeout))")
        case .idle:
            state = .closing
            context.close(promise: nil)
        case .reading(_, let call, _, _):
            releaseBuffers()
            responder.abandon(call)
            timedOut(context, "the request body made no progress for \(Self.describe(progressTimeout))")
        case .discarding:
            timedOut(context, "the request body made no progress for \(Self.describe(progressTimeout))")
        case .streaming(let exchange):
            // The exchange owns the response: it is cut short, and the connection closes.
            state = .closing
            exchange.cancel(.closed)
            context.close(promise: nil)
        case .responding, .closing:
            break
        }
    }

    /// Gives the current request's reserved body bytes back.
    private func releaseBuffers() {
        guard charged > 0 else { return }
        chargedTo?.release(charged)
        charged = 0
        chargedTo = nil
    }

    private static func describe(_ amount: TimeAmount?) -> String {
        amount.map(ConnectionTimeouts.describe) ?? "?"
    }

    /// 408 with `reason` (unless a response has started), then the connection closes.
    private func timedOut(_ context: ChannelHandlerContext, _ reason: String) {
        guard !responseStarted else {
            state = .closing
            context.close(promise: nil)
            return
        }
        respondAndClose(context, status: .requestTimeout, body: reason)
    }

    /// Writes a response with `connection: close` and closes the connection once it is written.
    private func respondAndClose(_ context: ChannelHandlerContext, status: HTTPResponseStatus, body: String) {
        var head = HTTPResponseHead(version: .http1_1, status: status)
        let bytes = context.channel.allocator.buffer(string: body)
        head.headers.add(name: "connection", value: "close")
        head.headers.add(name: "content-length", value: String(bytes.readableBytes))
        if bytes.readableBytes > 0 { head.headers.add(name: "content-type", value: "text/plain; charset=utf-8") }
        state = .closing
        responseStarted = true
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if bytes.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil) }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        releaseBuffers()
        unread.release()
        let previous = state
        state = .closing
        switch previous {
        case .reading(_, let call, _, _): responder.abandon(call)
        case .streaming(let exchange): exchange.cancel(.closed)
        default: break
        }
        context.fireChannelInactive()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if case .streaming(let exchange) = state { exchange.writabilityChanged(isWritable: context.channel.isWritable) }
        noteUnread(context)
        if context.channel.isWritable { resume(context) }
        context.fireChannelWritabilityChanged()
    }

    /// Response bytes the client has not read (what the socket did not take while the channel is not writable)
    /// count against the tenant's `maxBufferedBytes` and the node's budget: memory hangard holds for it. Under 256
    /// KiB they are a reading client's bytes in flight and count nothing. A connection whose unread bytes take its
    /// tenant past its share is closed, which frees them.
    private func noteUnread(_ context: ChannelHandlerContext) {
        var held = 0
        if !context.channel.isWritable {
            held = (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
            if held < Self.unreadFloor { held = 0 }
        }
        if unread.settle(held, account: { lastAccount }) != nil {
            state = .closing
            context.close(promise: nil)
        }
    }

    // MARK: HTTPExchangeOwner

    func exchangeWantsRead(_ exchange: HTTPExchange, context: ChannelHandlerContext) {
        guard readDeferred, queued.isEmpty, case .streaming(let current) = state, current === exchange,
            exchange.wantsRead
        else { return }
        readDeferred = false
        // The time the exchange held reading back was the server's, not the client's.
        if progressTimeout != nil {
            lastProgress = context.eventLoop.now
            bytesSinceProgress = 0
        }
        context.read()
    }

    func exchangeDidEnd(_ exchange: HTTPExchange, context: ChannelHandlerContext, ended: EventLoopFuture<Void>) {
        guard case .streaming(let current) = state, current === exchange else { return }
        if !exchange.mayKeepAlive || draining {
            state = .closing
            let channel = context.channel
            ended.whenComplete { _ in channel.close(promise: nil) }
        } else if exchange.requestEnded {
            state = .idle
            lastActivity = context.eventLoop.now
            armTimer(context)
            resume(context)
        } else {
            // Answered before its body was read (a refusal): the rest of the request is read and dropped.
            state = .discarding
            if readDeferred, queued.isEmpty {
                readDeferred = false
                context.read()
            }
        }
    }

    /// A request NIOHTTP1 cannot parse is answered with 400 (unless a response is under way); then, as for any
    /// error on the connection, it closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case .streaming(let exchange) = state {
            // The exchange owns the response: it is cut short, and the connection closes.
            state = .closing
            exchange.cancel(.closed)
            context.close(promise: nil)
            return
        }
        guard error is HTTPParserError, !responseStarted, !isClosing else {
            context.close(promise: nil)
            return
        }
        respondAndClose(context, status: .badRequest, body: "")
    }

    private var isClosing: Bool {
        if case .closing = state { true } else { false }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ListenerDrainEvent {
            draining = true
            if case .idle = state { context.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func onHead(_ context: ChannelHandlerContext, _ head: HTTPRequestHead) {
        guard case .idle = state else { return }
        responseStarted = false
        headSince = nil
        if progressTimeout != nil {
            lastProgress = context.eventLoop.now
            bytesSinceProgress = 0
        }
        switch responder.start(head, on: context.channel) {
        case .respond(let response):
            state = .discarding
            write(context, response, version: head.version, keepAlive: head.isKeepAlive)
        case .readBody(let call, let limit):
            lastAccount = responder.buffers(call) ?? lastAccount
            if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > limit {
                state = .closing
                write(context, responder.tooLarge(call, declaredLength: declared), version: head.version, keepAlive: false)
                return
            }
            state = .reading(head, call, limit: limit, body: nil)
        case .stream(let call, let limit):
            lastAccount = responder.buffers(call) ?? lastAccount
            if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > limit {
                state = .closing
                let refusal = responder.tooLarge(call, declaredLength: declared)
                write(context, refusal, version: head.version, keepAlive: false)
                return
            }
            let exchange = HTTPExchange(
                head: head, limit: limit, keepAlive: head.isKeepAlive && !draining, context: context, owner: self)
            state = .streaming(exchange)
            responseStarted = true  // a parse error from here on closes the connection (the exchange answers)
            responder.stream(call, exchange: exchange)
        }
    }

    private func onBody(_ context: ChannelHandlerContext, _ chunk: ByteBuffer) {
        if progressTimeout != nil {
            bytesSinceProgress += chunk.readableBytes
            if bytesSinceProgress >= progressBytes {
                lastProgress = context.eventLoop.now
                bytesSinceProgress = 0
            }
        }
        if case .streaming(let exchange) = state {
            if !exchange.receive(chunk) { exchange.cancel(.tooLarge) }
            return
        }
        guard case .reading(let head, let call, let limit, var body) = state else { return }
        let size = (body?.readableBytes ?? 0) + chunk.readableBytes
        guard size <= limit else {
            state = .closing
            releaseBuffers()
            write(context, responder.tooLarge(call, declaredLength: nil), version: head.version, keepAlive: false)
            return
        }
        if let account = chargedTo ?? responder.buffers(call) {
            if let refusal = account.reserve(chunk.readableBytes) {
                state = .closing
                releaseBuffers()
                write(context, responder.refused(call, refusal), version: head.version, keepAlive: false)
                return
            }
            chargedTo = account
            charged += chunk.readableBytes
        }
        state = .responding  // drops the state's reference, so that `body` is uniquely owned while it grows
        if body == nil {
            body = chunk
        } else {
            var chunk = chunk
            body!.writeBuffer(&chunk)
        }
        state = .reading(head, call, limit: limit, body: body)
    }

    private func onEnd(_ context: ChannelHandlerContext) {
        switch state {
        case .reading(let head, let call, _, let body):
            state = .responding
            let outcome = responder.respond(
                to: call, head: head, body: body ?? context.channel.allocator.buffer(capacity: 0),
                on: context.channel)
            switch outcome {
            case .ready(let result):
                releaseBuffers()
                finish(context, result, head: head)
            case .later(let future):
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                future.hop(to: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    handler.finish(context, result, head: head)
                }
            }
        case .streaming(let exchange):
            exchange.receiveEnd()
        case .discarding:
            state = .idle
            if draining { context.close(promise: nil) }
        case .idle, .responding, .closing:
            break
        }
    }

    private func finish(_ context: ChannelHandlerContext, _ result: Result<HTTPResponse, any Error>, head: HTTPRequestHead) {
        releaseBuffers()
        guard case .responding = state else { return }  // the connection closed meanwhile
        state = .idle
        let response: HTTPResponse
        switch result {
        case .success(let value): response = value
        case .failure(let error): response = HTTPResponse(status: .internalServerError, body: .init(string: "\(error)"))
        }
        write(context, response, version: head.version, keepAlive: head.isKeepAlive && !draining)
        resume(context)
    }

    private func write(
        _ context: ChannelHandlerContext, _ response: HTTPResponse, version: HTTPVersion, keepAlive: Bool
    ) {
        responseStarted = true
        var head = HTTPResponseHead(version: version, status: response.status, headers: response.headers)
        head.headers.replaceOrAdd(name: "content-length", value: String(response.body?.readableBytes ?? 0))
        if !keepAlive {
            head.headers.replaceOrAdd(name: "connection", value: "close")
        } else if version.minor == 0 {
            head.headers.replaceOrAdd(name: "connection", value: "keep-alive")
        }
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let body = response.body, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        if keepAlive {
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
            if isReading {
                needsFlush = true
            } else {
                // Answered later than the read: the idle clock starts now.
                context.flush()
                lastActivity = context.eventLoop.now
                armTimer(context)
                noteUnread(context)
            }
        } else {
            state = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

extension HTTPServerRequestPart {
    fileprivate var isHead: Bool {
        if case .head = self { return true }
        return false
    }
}
