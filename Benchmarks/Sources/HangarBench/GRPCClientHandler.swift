import NIOCore
import NIOHPACK
import NIOHTTP2

/// A gRPC unary client for one HTTP/2 connection, on swift-nio-http2 (so the bench's client is independent of
/// Hangar's own HTTP/2 server code): one handler behind `NIOHTTP2Handler` that owns every stream (no multiplexer,
/// no child channel per call), allocates stream ids, writes HEADERS + one DATA frame, and completes the call on the
/// trailers. It also carries streams read by a `GRPCStreamReader` (the `stream` and `pubsub` scenarios), beside the
/// unary calls on the same connection. Every method runs on the channel's event loop; completions are called there
/// too.
final class GRPCClientHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    typealias Completion = (Result<ByteBuffer, GRPCCallError>) -> Void

    /// The stream-level receive window advertised in SETTINGS, unless the connection asks for another.
    static let streamWindow = 1 << 20
    /// The connection-level receive window, raised from HTTP/2's 64 KiB when the connection starts.
    static let connectionWindow = 8 << 20

    /// The SETTINGS this client advertises (no server push), with `streamWindow` as every stream's receive window.
    static func settings(streamWindow: Int) -> HTTP2Settings {
        [
            HTTP2Setting(parameter: .enablePush, value: 0),
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16 * 1024),
        ]
    }

    private struct Call {
        let completion: Completion
        var response: ByteBuffer?
        var sawHeaders = false
        var unackedBytes = 0
    }

    /// This connection's stream-level receive window (what its SETTINGS advertised).
    let streamWindow: Int
    private var context: ChannelHandlerContext?
    private var calls: [HTTP2StreamID: Call] = [:]
    /// Streams, each read by its reader; looked up only for frames that are not a unary call's.
    private var streams: [HTTP2StreamID: any GRPCStreamReader] = [:]
    private var nextStreamID: Int32 = 1
    private var connectionUnackedBytes = 0
    private var isReading = false
    private var needsFlush = false
    private var isClosed = false

    init(streamWindow: Int = GRPCClientHandler.streamWindow) {
        self.streamWindow = streamWindow
    }

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

    // MARK: Server streams

    /// Opens a stream: HEADERS, then the first length-prefixed request message, with END_STREAM for a server
    /// stream (one request) and without it for a bidirectional one (`send` writes the next messages); the answer's
    /// frames go to `reader`, which returns their bytes to the stream's window with `windowUpdate` as it consumes
    /// them. Returns the stream's id, or nil when the connection is closed (the reader is then told so).
    @discardableResult
    func openStream(
        headers: HPACKHeaders, message: ByteBuffer, endStream: Bool = true, reader: any GRPCStreamReader
    ) -> HTTP2StreamID? {
        guard let context, !isClosed else {
            reader.failed("connection closed")
            return nil
        }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        streams[id] = reader
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        context.write(
            wrapOutboundOut(
                HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message), endStream: endStream)))),
            promise: nil)
        markFlush(context)
        return id
    }

    /// Writes one more length-prefixed message on the open bidirectional stream `id` (flushed with the read burst
    /// it answers, as calls started from completions are).
    func send(_ id: HTTP2StreamID, message: ByteBuffer) {
        guard let context, streams[id] != nil else { return }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message))))),
            promise: nil)
        markFlush(context)
    }

    /// Returns `increment` bytes to stream `id`'s receive window.
    func windowUpdate(_ id: HTTP2StreamID, _ increment: Int) {
        guard let context, increment > 0, streams[id] != nil else { return }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))),
            promise: nil)
        markFlush(context)
    }

    /// Cancels stream `id` (RST_STREAM CANCEL), as a gRPC client cancels a call; its consumer hears nothing more.
    /// DATA the server sent before it saw the reset is dropped by `NIOHTTP2Handler` without reaching this handler,
    /// yet it uses the connection's window: `unreceivedWindow`, what the stream's window still allowed the server
    /// to send, is returned to the connection's window at once, so the connection never runs dry however many
    /// streams are cancelled (it may end up that much larger than `connectionWindow`, which is harmless).
    func cancel(_ id: HTTP2StreamID, unreceivedWindow: Int) {
        guard let context, streams.removeValue(forKey: id) != nil else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
        if unreceivedWindow > 0 {
            context.write(
                wrapOutboundOut(
                    HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: unreceivedWindow))),
                promise: nil)
        }
        markFlush(context)
    }

    // MARK: Channel events

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
        if let closed = event as? StreamClosedEvent {
            if let call = calls.removeValue(forKey: closed.streamID) {
                call.completion(.failure(.closed))
            } else if let stream = streams.removeValue(forKey: closed.streamID) {
                stream.failed("stream closed before its trailers (\(closed.reason.map { "\($0)" } ?? "no error code"))")
            }
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
        let open = streams
        streams.removeAll()
        for stream in open.values { stream.failed("connection closed") }
        context.fireChannelInactive()
    }

    private func onHeaders(_ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        guard var call = calls[id] else {
            guard let stream = streams[id] else { return }
            if endStream { streams[id] = nil }
            return stream.received(headers: headers, endStream: endStream)
        }
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
        guard var call = calls[id] else {
            guard let stream = streams[id] else { return }
            if data.endStream { streams[id] = nil }
            return stream.received(data: &bytes, size: size, endStream: data.endStream)
        }
        if call.response == nil {
            call.response = bytes
        } else {
            call.response!.writeBuffer(&bytes)
        }
        call.unackedBytes += size
        if !data.endStream && call.unackedBytes >= streamWindow / 2 {
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
