import NIOCore
import NIOHPACK
import NIOHTTP2

/// A gRPC unary client for one HTTP/2 connection, on swift-nio-http2 (so the bench's client is independent of
/// Hangar's own HTTP/2 server code): one handler behind `NIOHTTP2Handler` that owns every stream (no multiplexer,
/// no child channel per call), allocates stream ids, writes HEADERS + one DATA frame, and completes the call on the
/// trailers. Every method runs on the channel's
/// event loop; completions are called there too.
final class GRPCClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    typealias Completion = (Result<ByteBuffer, GRPCCallError>) -> Void

    /// The stream-level receive window advertised in SETTINGS.
    static let streamWindow = 1 << 20
    /// The connection-level receive window, raised from HTTP/2's 64 KiB when the connection starts.
    static let connectionWindow = 8 << 20

    /// The SETTINGS this client advertises (no server push).
    static let settings: HTTP2Settings = [
        HTTP2Setting(parameter: .enablePush, value: 0),
        HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
        HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
    ]

    private struct Call {
        let completion: Completion
        var response: ByteBuffer?
        var sawHeaders = false
        var unackedBytes = 0
    }

    private var context: ChannelHandlerContext?
    private var calls: [HTTP2StreamID: Call] = [:]
    private var nextStreamID: Int32 = 1
    private var connectionUnackedBytes = 0
    private var isReading = false
    private var needsFlush = false
    private var isClosed = false

    /// The request HEADERS of a unary call to `path`; build once per method and reuse.
    static func requestHeaders(path: String) -> HPACKHeaders {
        [
            ":method": "POST", ":scheme": "http", ":path": path, ":authority": "localhost",
            "content-type": "application/grpc", "te": "trailers",
        ]
    }

    /// Calls in flight on this connection.
    var inFlight: Int { calls.count }

    /// Starts a unary call: `headers` from `requestHeaders(path:)`, `message` already length-prefixed. The
    /// completion receives the response message without its 5-byte prefix.
    func call(headers: HPACKHeaders, message: ByteBuffer, completion: @escaping Completion) {
        guard let context, !isClosed else { return completion(.failure(.closed)) }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        calls[id] = Call(completion: completion)
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        context.write(
            wrapOutboundOut(
                HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message), endStream: true)))),
            promise: nil)
        markFlush(context)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        let increment = Self.connectionWindow - 65_535
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))),
            promise: nil)
        context.flush()
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            onHeaders(frame.streamID, headers.headers, endStream: headers.endStream)
        case .data(let data):
            onData(context, frame.streamID, data)
        case .goAway:
            // The server is draining: calls already sent are still answered; new ones would be refused.
            isClosed = true
        default:
            break
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

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, let call = calls.removeValue(forKey: closed.streamID) {
            call.completion(.failure(.closed))
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamError { return }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        let pending = calls
        calls.removeAll()
        for call in pending.values { call.completion(.failure(.closed)) }
        context.fireChannelInactive()
    }

    private func onHeaders(_ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        guard var call = calls[id] else { return }
        if !call.sawHeaders {
            call.sawHeaders = true
            guard headers.first(name: ":status") == "200" else {
                calls[id] = nil
                let status = headers.first(name: ":status") ?? "?"
                return call.completion(.failure(.protocolViolation("HTTP status \(status)")))
            }
            if !endStream {
                calls[id] = call
                return
            }
        }
        guard endStream else { return }
        // Trailers, or a trailers-only response.
        calls[id] = nil
        let status = headers.first(name: "grpc-status").flatMap { Int($0) } ?? -1
        guard status == 0 else {
            return call.completion(.failure(.status(status, headers.first(name: "grpc-message") ?? "")))
        }
        guard var response = call.response, response.readableBytes >= 5,
            response.readInteger(as: UInt8.self) == 0, let length = response.readInteger(as: UInt32.self),
            response.readableBytes == Int(length)
        else {
            return call.completion(.failure(.protocolViolation("response is not exactly one uncompressed message")))
        }
        call.completion(.success(response))
    }

    private func onData(_ context: ChannelHandlerContext, _ id: HTTP2StreamID, _ data: HTTP2Frame.FramePayload.Data) {
        guard case .byteBuffer(var bytes) = data.data else { return }
        let size = bytes.readableBytes + (data.paddingBytes ?? 0)
        connectionUnackedBytes += size
        if connectionUnackedBytes >= Self.connectionWindow / 4 {
            let increment = connectionUnackedBytes
            connectionUnackedBytes = 0
            context.write(
                wrapOutboundOut(
                    HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: increment))),
                promise: nil)
            markFlush(context)
        }
        guard var call = calls[id] else { return }
        if call.response == nil {
            call.response = bytes
        } else {
            call.response!.writeBuffer(&bytes)
        }
        call.unackedBytes += size
        if !data.endStream && call.unackedBytes >= Self.streamWindow / 2 {
            let increment = call.unackedBytes
            call.unackedBytes = 0
            context.write(
                wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))),
                promise: nil)
            markFlush(context)
        }
        calls[id] = call
    }

    /// Flushes now, or once the current read burst ends so that calls started from completions share a syscall.
    private func markFlush(_ context: ChannelHandlerContext) {
        if isReading {
            needsFlush = true
        } else {
            context.flush()
        }
    }
}
