package import HangarRuntime
import HangarTransport
package import Logging
import NIOCore
import NIOHPACK

/// The gRPC calls of one HTTP/2 connection: `HTTP2ServerConnection` hands it every stream's headers and data; it
/// keeps per-call state in a dictionary, deframes incrementally, runs the method on the event loop and answers with
/// the response message and trailers. No stream multiplexer, no per-call child channel, no thread hop.
///
/// A streaming method gets a `GRPCStreamCall` at once (its admission counts against the app's `maxStreams`, not
/// `maxConcurrentRequests`): request messages reach it as they are deframed, their bytes go back to the client's
/// window once delivered, and its responses go out through the stream's own queue.
package final class GRPCConnectionHandler: HTTP2ServerDelegate {
    /// One call in progress. A class, so that the per-frame updates happen in place rather than by copying the
    /// state out of the dictionary and back.
    private final class Call {
        let method: GRPCService.Method
        let name: String
        let admission: Admission
        /// Set once the method runs: from then on its completion returns the admission's slot.
        var running = false
        let context: GRPCCallContext
        var deframer: GRPCMessageDeframer
        var request: ByteBuffer?
        var deadline: Scheduled<Void>?
        /// A streaming call's side for its method.
        var stream: GRPCStreamCall?
        /// Request bytes of a streaming call not yet returned to the client's window.
        var held = 0
        /// A streaming call's response head is out: its end is trailers, not a trailers-only response.
        var headSent = false
        /// Request bytes reserved from the tenant's `BufferAccount` (see `settleBuffers`).
        var charged = 0
        /// The call has left the table (answered, reset or failed).
        var ended = false

        init(
            method: GRPCService.Method, name: String, admission: Admission, context: GRPCCallContext,
            deframer: GRPCMessageDeframer
        ) {
            self.method = method
            self.name = name
            self.admission = admission
            self.context = context
            self.deframer = deframer
        }
    }

    /// The request headers the server reads, found in one pass over the block.
    private struct RequestHeaders {
        var method: String?
        var contentType: String?
        var path: String?
        var encoding: String?
        var token: String?
        var timeout: String?

        init(_ headers: HPACKHeaders) {
            for (name, value, _) in headers {
                switch name {
                case ":method": method = method ?? value
                case ":path": path = path ?? value
                case "content-type": contentType = contentType ?? value
                case "grpc-encoding": encoding = encoding ?? value
                case "dapr-api-token": token = token ?? value  // the first value, as Dapr reads it
                case "grpc-timeout": timeout = timeout ?? value
                default: break
                }
            }
        }
    }

    private let service: GRPCService
    private let identity: ListenerIdentity
    private let gate: Gate
    private let logger: Logger
    private var calls: [UInt32: Call] = [:]
    /// The listener drains this connection: streaming calls opened from now on are told at once.
    private var isDraining = false
    /// The connection that delivers this handler's streams (it owns the handler).
    private(set) weak var connection: HTTP2ServerConnection?
    /// The trailers of the last error answered on this connection, reused while the same error repeats.
    private var lastErrorTrailers: (key: GRPCStatus.Key, block: [UInt8])?
    /// This connection's buffered bytes, for the node's shedding of the heaviest connection (`trackBuffers`).
    private var holder: BufferBudget.Holder?
    /// Response bytes the client has not read, counted against its tenant (`outboundHeld`).
    private var unread = HeldBytes()
    /// The account of the last call admitted: the tenant a TCP connection's unread responses count against.
    private var lastBuffers: BufferAccount?

    package init(service: GRPCService, identity: ListenerIdentity, gate: Gate, logger: Logger) {
        self.service = service
        self.identity = identity
        self.gate = gate
        self.logger = logger
    }

    /// The channel handlers that serve this handler's calls over HTTP/2: the connection, and behind it the relay of
    /// the listener's drain to the streaming calls.
    func makeHandlers(settings: HTTP2ServerConnection.Settings = .init()) -> [any ChannelHandler] {
        [makeConnection(settings: settings), GRPCDrainRelay(handler: self)]
    }

    /// The channel handler that serves this handler's calls over HTTP/2.
    func makeConnection(settings: HTTP2ServerConnection.Settings = .init()) -> HTTP2ServerConnection {
        let connection = HTTP2ServerConnection(delegate: self, settings: settings)
        self.connection = connection
        return connection
    }

    /// Registers the connection with the node's `BufferBudget`, which may close it when the node is over its
    /// budget and this connection holds the most.
    func trackBuffers(on channel: any Channel) {
        let budget = gate.registry.buffers
        let holder = BufferBudget.Holder { [weak channel] in channel?.close(promise: nil) }
        self.holder = holder
        budget.register(holder)
        channel.closeFuture.whenComplete { _ in budget.remove(holder) }
    }

    // MARK: HTTP2ServerDelegate

    func received(headers: HPACKHeaders, stream id: UInt32, endStream: Bool) {
        if calls[id] == nil {
            onRequestHeaders(id, headers, endStream: endStream)
        } else if endStream {
            onEndOfRequest(id)
        }
    }

    func received(data: ByteBuffer, stream id: UInt32, endStream: Bool) {
        guard let call = calls[id] else {
            connection?.consumed(id, bytes: data.readableBytes)
            return
        }
        if call.stream == nil {
            // A unary request is consumed as it arrives: the deframer holds it, bounded by the message limit.
            connection?.consumed(id, bytes: data.readableBytes)
        } else {
            call.held += data.readableBytes
        }
        let messages: [ByteBuffer]
        do throws(GRPCMessageDeframer.Failure) {
            messages = try call.deframer.append(data)
        } catch {
            let status: GRPCStatus
            switch error {
            case .tooLarge(let length):
                status = GRPCStatus(call.admission.tooLarge(length))
            case .compressed:
                status = GRPCStatus(code: .internal, message: "compressed message without grpc-encoding")
            }
            return respondError(id, status)
        }
        if let stream = call.stream {
            if endStream && call.deframer.hasPartialMessage {
                return respondError(
                    id, GRPCStatus(code: .internal, message: "the request ended inside a message"))
            }
            stream.received(messages, end: endStream)
            credit(id)
            if !call.ended { settleBuffers(id, call) }
            return
        }
        for message in messages {
            guard call.request == nil else {
                return respondError(
                    id, GRPCStatus(code: .internal, message: "unary method received more than one message"))
            }
            call.request = message
        }
        if endStream { onEndOfRequest(id) }
        // Held beyond this read (a partial message, or a request not ended): counted. A call answered in this read
        // holds nothing.
        if !call.ended && !call.running { settleBuffers(id, call) }
    }

    /// Brings the call's reservation in its tenant's `BufferAccount` to the request bytes it holds now: its partial
    /// message, its request waiting for its end or its answer, its streamed messages not yet delivered. A
    /// reservation refused (the tenant's `maxBufferedBytes` or the node's budget) ends the call with
    /// RESOURCE_EXHAUSTED.
    private func settleBuffers(_ id: UInt32, _ call: Call) {
        let holding = call.deframer.bufferedBytes + (call.request?.storageCapacity ?? 0) + call.held
        let delta = holding - call.charged
        guard delta != 0 else { return }
        let buffers = call.admission.buffers
        if delta > 0 {
            if let refusal = buffers.reserve(delta) {
                return respondError(id, GRPCStatus(buffers.error(refusal, app: call.admission.caller.app)))
            }
        } else {
            buffers.release(-delta)
        }
        call.charged = holding
        holder?.held.wrappingAdd(delta, ordering: .relaxed)
    }

    func reset(stream id: UInt32) {
        removeCall(id)
    }

    /// Response bytes the client has not read count against its tenant's `maxBufferedBytes` and the node's budget
    /// as request bytes do: they are memory the daemon holds for it. They exist already, so they cannot be refused;
    /// a connection whose unread responses take its tenant past its share is closed instead, which frees them.
    func outboundHeld(bytes: Int) {
        let before = unread.charged
        let refusal = unread.settle(bytes) {
            if case .app(let app) = identity { return gate.registry.tenantAccount(app.namespace)?.buffers }
            return lastBuffers
        }
        holder?.held.wrappingAdd(unread.charged - before, ordering: .relaxed)
        guard case .tenant(let limit) = refusal else { return }
        logger.notice(
            """
            connection closed: its client does not read its responses, and what they hold took its tenant past \
            maxBufferedBytes
            """,
            metadata: [
                "tenant.namespace": "\(unread.namespace ?? "")", "connection.unreadBytes": "\(bytes)",
                "quota.limit": "\(limit)",
            ])
        connection?.abort()
    }

    func writable(stream id: UInt32) {
        calls[id]?.stream?.writable()
    }

    func awaitsRequest(stream id: UInt32) -> Bool {
        guard let call = calls[id] else { return false }
        // A streaming call between messages is idle by design; a unary call waits for its message and its end.
        return call.stream == nil ? !call.running : call.deframer.hasPartialMessage
    }

    func requestStalled(stream id: UInt32, after timeout: TimeAmount) {
        respondError(
            id,
            GRPCStatus(
                code: .deadlineExceeded,
                message: "the request made no progress for \(ConnectionTimeouts.describe(timeout)): ended by the server"
            ))
    }

    /// The listener is draining (shutdown, an upgrade, the app's removal): streaming calls that would otherwise
    /// hold the connection open until the drain timeout are told (`GRPCStreamCall.onDrain`).
    func draining() {
        isDraining = true
        for call in calls.values { call.stream?.drained() }
    }

    // MARK: Streaming calls (from GRPCStreamCall)

    func isWritable(_ id: UInt32) -> Bool {
        connection?.isWritable(id) ?? false
    }

    /// Runs `body`, whose writes go out together at its end (`HTTP2ServerConnection.cork()`).
    func corked(_ body: () -> Void) {
        guard let connection else { return body() }
        connection.cork()
        body()
        connection.uncork()
    }

    func send(_ id: UInt32, _ message: ByteBuffer) -> Bool {
        guard let call = calls[id], let connection else { return false }
        if !call.headSent {
            call.headSent = true
            connection.sendHeaders(id, HPACKLiteral.grpcResponseHead)
        }
        return connection.send(id, message)
    }

    /// A streaming call's response head with `fields` (a relayed app's headers).
    func sendHeaders(_ id: UInt32, _ fields: [(name: String, value: String)]) {
        guard let call = calls[id], !call.headSent, let connection else { return }
        call.headSent = true
        var head: [(String, String)] = [(":status", "200")]
        if !fields.contains(where: { $0.name == "content-type" }) { head.append(("content-type", "application/grpc")) }
        head.append(contentsOf: fields.lazy.map { ($0.name, $0.value) })
        connection.sendHeaders(id, HPACKLiteral.encode(head))
    }

    /// Ends a streaming call with trailers made elsewhere (a relayed app's), counted under their `grpc-status`.
    func finish(_ id: UInt32, trailers fields: [(name: String, value: String)]) {
        guard let call = removeCall(id), let connection else { return }
        let code = fields.first { $0.name == "grpc-status" }.flatMap { Int($0.value) }.flatMap(RPCCode.init(rawValue:))
        record(call, code ?? .unknown)
        var block: [(String, String)] = []
        if !call.headSent {
            // Trailers-only: the response head's fields come first.
            block.append((":status", "200"))
            block.append(("content-type", fields.first { $0.name == "content-type" }?.value ?? "application/grpc"))
        }
        block.append(contentsOf: fields.lazy.filter { $0.name != "content-type" }.map { ($0.name, $0.value) })
        connection.respond(id, headersOnly: HPACKLiteral.encode(block))
    }

    func finish(_ id: UInt32, _ status: GRPCStatus?) {
        guard let call = calls[id] else { return }
        guard let status else {
            record(removeCall(id), .ok)
            connection?.respond(id, headersOnly: call.headSent ? HPACKLiteral.grpcOKTrailers : Self.okOnly)
            return
        }
        respondError(id, status)
    }

    /// A request message was delivered to its method: its bytes go back to the client.
    func delivered(_ id: UInt32) {
        credit(id)
    }

    /// Returns what a streaming call holds beyond its undelivered messages to the client's window.
    private func credit(_ id: UInt32) {
        guard let call = calls[id], let stream = call.stream else { return }
        let keep = min(call.held, stream.undeliveredBytes)
        connection?.consumed(id, bytes: call.held - keep)
        call.held = keep
        if call.charged > 0 { settleBuffers(id, call) }
    }

    /// A trailers-only OK response (a stream that ends with no message).
    private static let okOnly = HPACKLiteral.encode([
        (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0"),
    ])

    // MARK: Requests

    private func onRequestHeaders(_ id: UInt32, _ headers: HPACKHeaders, endStream: Bool) {
        guard let connection, let eventLoop = connection.eventLoop else { return }
        // HTTP/2 header names are lower case; a block with others is not a gRPC request and is refused below.
        let fields = RequestHeaders(headers)
        guard fields.method == "POST" else {
            return respondHTTPError(id, status: "405", message: "gRPC requires POST")
        }
        guard let contentType = fields.contentType, contentType.hasPrefix("application/grpc") else {
            return respondHTTPError(id, status: "415", message: "content-type must be application/grpc")
        }
        let path = fields.path ?? ""
        guard let registered = service.method(path, headers: headers) else {
            let name = path.split(separator: "/").last.map(String.init) ?? path
            return respondError(
                id, GRPCStatus(code: .unimplemented, message: "method \(name) (\(path)) is not implemented by Hangar"))
        }
        if let encoding = fields.encoding, encoding != "identity" {
            return respondError(
                id, GRPCStatus(code: .unimplemented, message: "grpc-encoding '\(encoding)' is not supported"))
        }
        let streaming: GRPCService.StreamHandler?
        switch registered.method {
        case .unary, .unaryWithHeaders: streaming = nil
        case .streaming(let handler): streaming = handler
        }
        let admission: Admission
        do {
            admission = try gate.admit(
                identity, token: fields.token, connection: connection.channel, stream: streaming != nil)
        } catch {
            return respondError(id, GRPCStatus(error))
        }
        lastBuffers = admission.buffers
        let call = Call(
            method: registered.method,
            name: registered.name, admission: admission,
            context: GRPCCallContext(caller: admission.caller, headers: headers, eventLoop: eventLoop),
            deframer: GRPCMessageDeframer(maxMessageBytes: admission.maxRequestBytes))
        if let timeout = fields.timeout.flatMap(Self.parseTimeout) {
            let bound = NIOLoopBound(self, eventLoop: eventLoop)
            call.deadline = eventLoop.scheduleTask(in: timeout) {
                let handler = bound.value
                guard handler.calls[id] != nil else { return }
                handler.respondError(id, GRPCStatus(code: .deadlineExceeded, message: "deadline exceeded"))
            }
        }
        calls[id] = call
        if let streaming {
            let stream = GRPCStreamCall(context: call.context, stream: id, handler: self)
            call.stream = stream
            streaming(stream)
            call.deframer.keepsPrefix = stream.receivesFramed
            if endStream { stream.received([], end: true) }
            // Opened between the first GOAWAY and the last: a subscription must not stay on a draining connection.
            if isDraining { stream.drained() }
            return
        }
        if endStream { onEndOfRequest(id) }
    }

    private func onEndOfRequest(_ id: UInt32) {
        guard let call = calls[id] else { return }
        if let stream = call.stream {
            guard !call.deframer.hasPartialMessage else {
                return respondError(id, GRPCStatus(code: .internal, message: "the request ended inside a message"))
            }
            return stream.received([], end: true)
        }
        guard let request = call.request, !call.deframer.hasPartialMessage else {
            return respondError(
                id, GRPCStatus(code: .internal, message: "the request ended without a complete message"))
        }
        let method: GRPCService.UnaryHandler
        switch call.method {
        case .unary(let unary): method = unary
        case .unaryWithHeaders(let withHeaders): return run(id, call, request, withHeaders)
        case .streaming: return
        }
        call.running = true
        let admission = call.admission
        switch method(request, call.context) {
        case .ready(let result):
            // A non-blocking method answered during this read: no future, no callback.
            admission.finish()
            complete(id, result)
        case .later(let future):
            // The request stays in memory until the answer: counted.
            settleBuffers(id, call)
            let bound = NIOLoopBound(self, eventLoop: call.context.eventLoop)
            future.hop(to: call.context.eventLoop).whenComplete { result in
                admission.finish()
                bound.value.complete(id, result)
            }
        }
    }

    /// Runs a unary method whose answer carries response headers.
    private func run(
        _ id: UInt32, _ call: Call, _ request: ByteBuffer, _ method: GRPCService.UnaryWithHeadersHandler
    ) {
        call.running = true
        let admission = call.admission
        switch method(request, call.context) {
        case .ready(let result):
            admission.finish()
            complete(id, result)
        case .later(let future):
            settleBuffers(id, call)
            let bound = NIOLoopBound(self, eventLoop: call.context.eventLoop)
            future.hop(to: call.context.eventLoop).whenComplete { result in
                admission.finish()
                bound.value.complete(id, result)
            }
        }
    }

    /// Answers with the response headers first, then the message and OK, or the error status in trailers.
    private func complete(_ id: UInt32, _ result: Result<GRPCUnaryAnswer, any Error>) {
        guard let call = calls[id] else { return }
        let answer: GRPCUnaryAnswer
        switch result {
        case .success(let success): answer = success
        case .failure(let error): return respondError(id, GRPCStatus(error))
        }
        let relayed = answer.headers.filter { name, value in
            GRPCClientConnectionHandler.isValid(name: name, value: value) && !name.hasPrefix("grpc-")
                && name != "content-type" && name != "te"
        }
        // Without headers of its own (the usual gRPC callee), the fixed head: nothing to encode.
        let head: [UInt8]
        if relayed.isEmpty {
            head = HPACKLiteral.grpcResponseHead
        } else {
            head = HPACKLiteral.encode(
                [(":status", "200"), ("content-type", "application/grpc")] + relayed.map { ($0.name, $0.value) })
        }
        switch answer.outcome {
        case .success(let message):
            record(removeCall(id), .ok)
            connection?.respond(id, head: head, message: message, trailers: HPACKLiteral.grpcOKTrailers)
        case .failure(let status):
            // The headers go out as the response head; the status follows as trailers proper.
            call.headSent = true
            connection?.sendHeaders(id, head)
            respondError(id, status)
        }
    }

    private func complete(_ id: UInt32, _ result: Result<ByteBuffer, any Error>) {
        guard calls[id] != nil else { return }  // reset by the client or past its deadline
        switch result {
        case .success(let response): respond(id, response)
        case .failure(let error): respondError(id, GRPCStatus(error))
        }
    }

    // MARK: Responses

    /// Forgets a call; its admission's slot is returned here unless its method is running (then the method's
    /// completion returns it).
    @discardableResult
    private func removeCall(_ id: UInt32) -> Call? {
        guard let call = calls.removeValue(forKey: id) else { return nil }
        call.ended = true
        if call.charged > 0 {
            call.admission.buffers.release(call.charged)
            holder?.held.wrappingSubtract(call.charged, ordering: .relaxed)
            call.charged = 0
        }
        call.deadline?.cancel()
        if !call.running { call.admission.finish() }
        call.stream?.cancelled()
        return call
    }

    private func record(_ call: Call?, _ code: RPCCode) {
        call?.admission.record(method: call?.name ?? "", transport: "grpc", code: code)
    }

    private func respond(_ id: UInt32, _ message: ByteBuffer) {
        record(removeCall(id), .ok)
        connection?.respond(id, message: message, trailers: HPACKLiteral.grpcOKTrailers)
    }

    /// A trailers-only response, or trailers after a streaming call's messages. When the client is still sending,
    /// the connection then resets the stream with NO_ERROR (once the trailers are written), which HTTP/2 provides
    /// for a server that has answered before reading the whole request.
    private func respondError(_ id: UInt32, _ status: GRPCStatus) {
        let call = removeCall(id)
        record(call, status.code)
        if status.code == .internal || status.code == .unknown {
            logger.warning(
                "gRPC call failed",
                metadata: ["grpc.status": "\(status.code)", "error": "\(status.message)"])
        }
        if call?.headSent == true {
            // After streamed messages: trailers proper, without the response head's fields.
            var trailers = HPACKHeaders()
            status.addTrailers(to: &trailers)
            connection?.respond(id, headersOnly: HPACKLiteral.encode(trailers))
            return
        }
        let key = status.key
        let block: [UInt8]
        if let last = lastErrorTrailers, last.key == key {
            block = last.block
        } else {
            var headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
            status.addTrailers(to: &headers)
            block = HPACKLiteral.encode(headers)
            lastErrorTrailers = (key, block)
        }
        connection?.respond(id, headersOnly: block)
    }

    private func respondHTTPError(_ id: UInt32, status: String, message: String) {
        guard let connection, let channel = connection.channel else { return }
        let block = HPACKLiteral.encode([
            (":status", status), ("content-type", "text/plain"), ("content-length", String(message.utf8.count)),
        ])
        connection.respond(id, headers: block, body: channel.allocator.buffer(string: message))
    }

    /// Parses `grpc-timeout` (at most 8 digits and a unit: H M S m u n).
    static func parseTimeout(_ value: String) -> TimeAmount? {
        guard let unit = value.last, value.count >= 2, value.count <= 9,
            let amount = Int64(value.dropLast()), amount >= 0
        else { return nil }
        switch unit {
        case "H": return .hours(amount)
        case "M": return .minutes(amount)
        case "S": return .seconds(amount)
        case "m": return .milliseconds(amount)
        case "u": return .microseconds(amount)
        case "n": return .nanoseconds(amount)
        default: return nil
        }
    }
}

/// Tells a connection's streaming calls that its listener drains: `HTTP2ServerConnection` answers the
/// `ListenerDrainEvent` with GOAWAY and passes it on to this handler, behind it.
final class GRPCDrainRelay: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    private let handler: GRPCConnectionHandler

    init(handler: GRPCConnectionHandler) {
        self.handler = handler
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ListenerDrainEvent { handler.draining() }
        context.fireUserInboundEventTriggered(event)
    }
}
