public import HangarComponents
import HangarRuntime
import HangarTransport
public import NIOCore
public import NIOHTTP1

/// A complete HTTP/1.1 response: the status, the headers the responder sets (the connection handler adds
/// `content-length` and `connection`) and the body.
public struct HTTPResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer?

    public init(status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
    }
}

/// What to do with a request once its head is read.
public enum HTTPStart<Call> {
    /// Answer now; the body, if any, is read and discarded.
    case respond(HTTPResponse)
    /// Read the body, at most `limit` bytes, then call `respond(to:…)`. A body over the limit is answered with
    /// `tooLarge(call)`, and the connection is closed rather than read to its end.
    case readBody(Call, limit: Int)
}

/// An HTTP/1.1 application behind `HTTPConnectionHandler`. Every method is called on the connection's event loop.
public protocol HTTPResponder: Sendable {
    /// What a request carries from its head to its response (its route, its admission).
    associatedtype Call

    /// Decides from the head alone: refuse, answer, or read the body.
    func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Call>

    /// The response to a request whose body (empty when there was none) has been read: at once, or later.
    func respond(to call: Call, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
        -> Eventual<HTTPResponse>

    /// The response to a request whose body is over its limit; `respond` is not called for it.
    func tooLarge(_ call: Call, declaredLength: Int?) -> HTTPResponse

    /// The connection closed before the body was read: `respond` will not be called.
    func abandon(_ call: Call)
}

/// One HTTP/1.1 connection, behind NIOHTTP1's decoder and encoder: reads each request's head and body, hands them
/// to the responder, writes its response. Everything runs on the connection's event loop; a responder whose work
/// does not block answers in the same read, with no task, future or thread hop.
///
/// It also does what NIOHTTP1's pipelining and error handlers would, without two more handlers on every request's
/// path: pipelined requests wait (and the socket is not read) while a response is pending, and a request NIOHTTP1
/// cannot parse is answered with 400 before the connection closes.
final class HTTPConnectionHandler<Responder: HTTPResponder>: ChannelDuplexHandler {
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

    init(responder: Responder) {
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        let part = unwrapInboundIn(data)
        if case .responding = state {
            queued.append(part)
        } else if !queued.isEmpty {
            queued.append(part)
        } else {
            handle(context, part)
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
        while !queued.isEmpty {
            switch state {
            case .responding, .closing: return
            case .idle, .reading, .discarding: handle(context, queued.removeFirst())
            }
        }
        if readDeferred, case .idle = state {
            readDeferred = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        switch state {
        case .responding:
            readDeferred = true
        default:
            if queued.isEmpty { context.read() } else { readDeferred = true }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if case .reading(_, let call, _, _) = state { responder.abandon(call) }
        state = .closing
        context.fireChannelInactive()
    }

    /// A request NIOHTTP1 cannot parse is answered with 400 (unless a response is under way); then, as for any
    /// error on the connection, it closes.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard error is HTTPParserError, !responseStarted, !isClosing else {
            context.close(promise: nil)
            return
        }
        var head = HTTPResponseHead(version: .http1_1, status: .badRequest)
        head.headers.add(name: "connection", value: "close")
        head.headers.add(name: "content-length", value: "0")
        state = .closing
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
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
        switch responder.start(head, on: context.channel) {
        case .respond(let response):
            state = .discarding
            write(context, response, version: head.version, keepAlive: head.isKeepAlive)
        case .readBody(let call, let limit):
            if let declared = head.headers.first(name: "content-length").flatMap({ Int($0) }), declared > limit {
                state = .closing
                write(context, responder.tooLarge(call, declaredLength: declared), version: head.version, keepAlive: false)
                return
            }
            state = .reading(head, call, limit: limit, body: nil)
        }
    }

    private func onBody(_ context: ChannelHandlerContext, _ chunk: ByteBuffer) {
        guard case .reading(let head, let call, let limit, var body) = state else { return }
        let size = (body?.readableBytes ?? 0) + chunk.readableBytes
        guard size <= limit else {
            state = .closing
            write(context, responder.tooLarge(call, declaredLength: nil), version: head.version, keepAlive: false)
            return
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
                finish(context, result, head: head)
            case .later(let future):
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                future.hop(to: context.eventLoop).whenComplete { result in
                    let (handler, context) = bound.value
                    handler.finish(context, result, head: head)
                }
            }
        case .discarding:
            state = .idle
            if draining { context.close(promise: nil) }
        case .idle, .responding, .closing:
            break
        }
    }

    private func finish(_ context: ChannelHandlerContext, _ result: Result<HTTPResponse, any Error>, head: HTTPRequestHead) {
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
            if isReading { needsFlush = true } else { context.flush() }
        } else {
            state = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
