package import HangarRuntime
package import Logging
package import NIOCore
import NIOHPACK
package import NIOHTTP2

/// The whole gRPC server for one HTTP/2 connection: one handler behind `NIOHTTP2Handler` that sees every stream's
/// frames, keeps per-stream state in a dictionary, deframes incrementally, runs the method on the event loop and
/// writes HEADERS + DATA + trailers. No stream multiplexer, no per-call child channel, no thread hop.
package final class GRPCConnectionHandler: ChannelInboundHandler {
    package typealias InboundIn = HTTP2Frame
    package typealias OutboundOut = HTTP2Frame

    /// The stream-level receive window advertised in SETTINGS.
    package static let streamWindow = 1 << 20
    /// The connection-level receive window, raised from HTTP/2's 64 KiB when the connection starts.
    static let connectionWindow = 8 << 20

    /// The SETTINGS this server advertises.
    package static let settings: HTTP2Settings = [
        // Each stream may buffer up to one request message: this bounds what one connection can make the node hold.
        HTTP2Setting(parameter: .maxConcurrentStreams, value: 128),
        HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
        HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
    ]

    /// One call in progress. A class, so that the per-frame updates happen in place rather than by copying the
    /// state out of the dictionary and back.
    private final class Stream {
        let method: GRPCService.UnaryHandler
        let name: String
        let admission: Admission
        let started: NIODeadline
        /// Set once the method runs: from then on its completion returns the admission's slot.
        var running = false
        let context: GRPCCallContext
        var deframer: GRPCMessageDeframer
        var request: ByteBuffer?
        var unackedBytes = 0
        var deadline: Scheduled<Void>?

        init(
            method: @escaping GRPCService.UnaryHandler, name: String, admission: Admission, context: GRPCCallContext,
            deframer: GRPCMessageDeframer
        ) {
            self.method = method
            self.name = name
            self.admission = admission
            self.started = .now()
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
    private let metrics: RuntimeMetrics
    private let logger: Logger
    private var streams: [HTTP2StreamID: Stream] = [:]
    private var connectionUnackedBytes = 0
    private var isReading = false
    /// Set when the listener drains: no new streams; the connection closes once the last one is answered.
    private var draining = false
    private var needsFlush = false
    /// Streams answered before their request ended (a refusal at HEADERS). The rest of the request usually
    /// arrives in the same read; a stream still unfinished when the read ends is reset then. Resetting at once
    /// would trip clients' rapid-reset protection (swift-nio-http2 closes a connection after 200 resets in 30 s)
    /// when many calls are refused.
    private var unfinishedRequests: Set<HTTP2StreamID> = []
    /// The trailers of the last error answered on this connection, reused while the same error repeats.
    private var lastErrorTrailers: (key: GRPCStatus.Key, headers: HPACKHeaders)?

    private static let responseHeaders: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
    private static let okTrailers: HPACKHeaders = ["grpc-status": "0"]

    package init(service: GRPCService, identity: ListenerIdentity, gate: Gate, logger: Logger) {
        self.service = service
        self.identity = identity
        self.gate = gate
        self.metrics = gate.metrics
        self.logger = logger
    }

    package func channelActive(context: ChannelHandlerContext) {
        write(
            context,
            HTTP2Frame(
                streamID: .rootStream,
                payload: .windowUpdate(windowSizeIncrement: Self.connectionWindow - 65_535)))
        context.flush()
        context.fireChannelActive()
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if unfinishedRequests.contains(frame.streamID) {
                if headers.endStream { unfinishedRequests.remove(frame.streamID) }
            } else if streams[frame.streamID] == nil {
                onRequestHeaders(context, frame.streamID, headers.headers, endStream: headers.endStream)
            } else if headers.endStream {
                onEndOfRequest(context, frame.streamID)
            }
        case .data(let data):
            onData(context, frame.streamID, data)
        default:
            break
        }
    }

    package func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        if !unfinishedRequests.isEmpty {
            for id in unfinishedRequests { write(context, HTTP2Frame(streamID: id, payload: .rstStream(.noError))) }
            unfinishedRequests.removeAll()
            needsFlush = true
        }
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
            removeStream(closed.streamID)
            unfinishedRequests.remove(closed.streamID)
            closeIfDrained(context)
        } else if event is ListenerDrainEvent {
            draining = true
            write(
                context,
                HTTP2Frame(
                    streamID: .rootStream, payload: .goAway(lastStreamID: .maxID, errorCode: .noError, opaqueData: nil))
            )
            context.flush()
            closeIfDrained(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func closeIfDrained(_ context: ChannelHandlerContext) {
        if draining && streams.isEmpty { context.close(promise: nil) }
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamError { return }
        logger.debug("gRPC connection closed on error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        for id in Array(streams.keys) { removeStream(id) }
        context.fireChannelInactive()
    }

    // MARK: Requests

    private func onRequestHeaders(
        _ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool
    ) {
        // HTTP/2 header names are lower case; a block with others is not a gRPC request and is refused below.
        let fields = RequestHeaders(headers)
        guard fields.method == "POST" else {
            return respondHTTPError(context, id, status: "405", message: "gRPC requires POST")
        }
        guard let contentType = fields.contentType, contentType.hasPrefix("application/grpc") else {
            return respondHTTPError(context, id, status: "415", message: "content-type must be application/grpc")
        }
        let path = fields.path ?? ""
        guard let registered = service.methods[path] else {
            let name = path.split(separator: "/").last.map(String.init) ?? path
            return respondError(
                context, id,
                GRPCStatus(code: .unimplemented, message: "method \(name) (\(path)) is not implemented by Hangar"),
                requestEnded: endStream)
        }
        if let encoding = fields.encoding, encoding != "identity" {
            return respondError(
                context, id,
                GRPCStatus(code: .unimplemented, message: "grpc-encoding '\(encoding)' is not supported"),
                requestEnded: endStream)
        }
        let admission: Admission
        do {
            admission = try gate.admit(identity, token: fields.token, connection: context.channel)
        } catch {
            return respondError(context, id, GRPCStatus(error), requestEnded: endStream)
        }
        let stream = Stream(
            method: {
                switch registered.method {
                case .unary(let handler): handler
                }
            }(),
            name: registered.name, admission: admission,
            context: GRPCCallContext(
                caller: admission.caller, headers: headers, eventLoop: context.eventLoop),
            deframer: GRPCMessageDeframer(maxMessageBytes: admission.maxRequestBytes))
        if let timeout = fields.timeout.flatMap(Self.parseTimeout) {
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            stream.deadline = context.eventLoop.scheduleTask(in: timeout) {
                let (handler, context) = bound.value
                guard handler.streams[id] != nil else { return }
                handler.respondError(
                    context, id, GRPCStatus(code: .deadlineExceeded, message: "deadline exceeded"), requestEnded: false)
            }
        }
        streams[id] = stream
        if endStream { onEndOfRequest(context, id) }
    }

    private func onData(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ data: HTTP2Frame.FramePayload.Data) {
        let size: Int
        let bytes: ByteBuffer
        switch data.data {
        case .byteBuffer(let buffer):
            bytes = buffer
            size = buffer.readableBytes + (data.paddingBytes ?? 0)
        case .fileRegion:
            return
        }
        // Credit the connection window for every byte, even for streams already answered or reset.
        connectionUnackedBytes += size
        if connectionUnackedBytes >= Self.connectionWindow / 4 {
            write(
                context,
                HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: connectionUnackedBytes)))
            connectionUnackedBytes = 0
            markFlush(context)
        }
        guard let stream = streams[id] else {
            if data.endStream { unfinishedRequests.remove(id) }
            return
        }
        let messages: [ByteBuffer]
        do throws(GRPCMessageDeframer.Failure) {
            messages = try stream.deframer.append(bytes)
        } catch {
            let status: GRPCStatus
            switch error {
            case .tooLarge(let length):
                status = GRPCStatus(stream.admission.tooLarge(length))
            case .compressed:
                status = GRPCStatus(code: .internal, message: "compressed message without grpc-encoding")
            }
            return respondError(context, id, status, requestEnded: data.endStream)
        }
        for message in messages {
            guard stream.request == nil else {
                return respondError(
                    context, id, GRPCStatus(code: .internal, message: "unary method received more than one message"),
                    requestEnded: data.endStream)
            }
            stream.request = message
        }
        stream.unackedBytes += size
        if !data.endStream && stream.unackedBytes >= Self.streamWindow / 2 {
            write(context, HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: stream.unackedBytes)))
            stream.unackedBytes = 0
            markFlush(context)
        }
        if data.endStream { onEndOfRequest(context, id) }
    }

    private func onEndOfRequest(_ context: ChannelHandlerContext, _ id: HTTP2StreamID) {
        guard let stream = streams[id] else { return }
        guard let request = stream.request, !stream.deframer.hasPartialMessage else {
            return respondError(
                context, id, GRPCStatus(code: .internal, message: "the request ended without a complete message"),
                requestEnded: true)
        }
        stream.running = true
        let admission = stream.admission
        switch stream.method(request, stream.context) {
        case .ready(let result):
            // A non-blocking method answered during this read: no future, no callback.
            admission.finish()
            complete(context, id, result)
        case .later(let future):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            future.hop(to: context.eventLoop).whenComplete { result in
                admission.finish()
                let (handler, context) = bound.value
                handler.complete(context, id, result)
            }
        }
    }

    private func complete(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ result: Result<ByteBuffer, any Error>) {
        guard streams[id] != nil else { return }  // reset by the client or past its deadline
        switch result {
        case .success(let response): respond(context, id, response)
        case .failure(let error): respondError(context, id, GRPCStatus(error), requestEnded: true)
        }
    }

    // MARK: Responses

    /// Forgets a stream; its admission's slot is returned here unless its method is running (then the method's
    /// completion returns it).
    @discardableResult
    private func removeStream(_ id: HTTP2StreamID) -> Stream? {
        guard let stream = streams.removeValue(forKey: id) else { return nil }
        stream.deadline?.cancel()
        if !stream.running { stream.admission.finish() }
        return stream
    }

    private func record(_ stream: Stream?, _ code: RPCCode) {
        guard let stream else { return }
        let elapsed = NIODeadline.now() - stream.started
        metrics.recordRequest(
            app: stream.admission.caller.app, method: stream.name, transport: "grpc", code: code,
            duration: .nanoseconds(elapsed.nanoseconds))
    }

    private func respond(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ message: ByteBuffer) {
        record(removeStream(id), .ok)
        write(context, HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.responseHeaders))))
        write(context, HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message)))))
        write(context, HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.okTrailers, endStream: true))))
        markFlush(context)
        if draining { context.flush(); closeIfDrained(context) }
    }

    /// A trailers-only response. When the client is still sending, the stream is then reset with NO_ERROR, which
    /// HTTP/2 provides for a server that has answered before reading the whole request.
    private func respondError(
        _ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ status: GRPCStatus, requestEnded: Bool
    ) {
        record(removeStream(id), status.code)
        if status.code == .internal || status.code == .unknown {
            logger.warning(
                "gRPC call failed",
                metadata: ["grpc.status": "\(status.code)", "error": "\(status.message)"])
        }
        let key = status.key
        let headers: HPACKHeaders
        if let last = lastErrorTrailers, last.key == key {
            headers = last.headers
        } else {
            var built = Self.responseHeaders
            status.addTrailers(to: &built)
            lastErrorTrailers = (key, built)
            headers = built
        }
        write(context, HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: true))))
        if !requestEnded {
            if isReading {
                unfinishedRequests.insert(id)
            } else {
                write(context, HTTP2Frame(streamID: id, payload: .rstStream(.noError)))
            }
        }
        markFlush(context)
        if draining { context.flush(); closeIfDrained(context) }
    }

    private func respondHTTPError(
        _ context: ChannelHandlerContext, _ id: HTTP2StreamID, status: String, message: String
    ) {
        var headers: HPACKHeaders = [":status": status, "content-type": "text/plain"]
        headers.add(name: "content-length", value: String(message.utf8.count))
        write(context, HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers))))
        write(
            context,
            HTTP2Frame(
                streamID: id,
                payload: .data(
                    .init(data: .byteBuffer(context.channel.allocator.buffer(string: message)), endStream: true))))
        write(context, HTTP2Frame(streamID: id, payload: .rstStream(.noError)))
        markFlush(context)
    }

    private func write(_ context: ChannelHandlerContext, _ frame: HTTP2Frame) {
        context.write(wrapOutboundOut(frame), promise: nil)
    }

    /// Flushes now, or once the current read burst ends so that pipelined responses share a syscall.
    private func markFlush(_ context: ChannelHandlerContext) {
        if isReading {
            needsFlush = true
        } else {
            context.flush()
        }
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
