import Foundation
import HangarRuntime
import NIOCore
import NIOHPACK
import NIOHTTP2

/// A unary call's answer: the response headers (initial metadata), the one response message (without its 5-byte
/// prefix) and the trailers.
struct GRPCClientResponse: Sendable {
    var headers: HPACKHeaders
    var message: ByteBuffer
    var trailers: HPACKHeaders
}

/// The client side of one HTTP/2 connection to an app's gRPC server, behind swift-nio-http2's `NIOHTTP2Handler`
/// in client mode (the library's state machines and flow control: robustness matters more than the last
/// microsecond on this side). One handler owns every stream of the connection, without a multiplexer: it allocates
/// stream ids, writes HEADERS and one DATA frame per unary call, collects the answer, and completes the call on its
/// trailers, on a stream reset, at its deadline (RST_STREAM CANCEL), or when the connection ends. Streamed calls
/// (gRPC proxying) are `GRPCClientStream`s kept apart from the unary calls, so a unary call's frames never look
/// further than its own table. Every method runs on the channel's event loop.
final class GRPCClientConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

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
        let promise: EventLoopPromise<GRPCClientResponse>
        var headers: HPACKHeaders?
        var message: ByteBuffer?
        var unackedBytes = 0
        var timeout: Scheduled<Void>?
    }

    private let maxResponseBytes: Int
    /// Called once, when the connection stops taking new calls (GOAWAY, an error, or its end).
    private let onGoingAway: @Sendable () -> Void
    private var context: ChannelHandlerContext?
    private var calls: [HTTP2StreamID: Call] = [:]
    private var streams: [HTTP2StreamID: GRPCClientStream] = [:]
    /// Streams whose held request message goes out when the event loop's turn ends.
    private var flushing: [GRPCClientStream] = []
    private var flushScheduled = false
    private var nextStreamID: Int32 = 1
    private var connectionUnackedBytes = 0
    private var isReading = false
    private var needsFlush = false
    /// The server sent GOAWAY or the connection closed: calls already sent are answered, new ones go elsewhere.
    private(set) var isGoingAway = false {
        didSet { if isGoingAway, !oldValue { onGoingAway() } }
    }

    init(maxResponseBytes: Int, onGoingAway: @escaping @Sendable () -> Void) {
        self.maxResponseBytes = maxResponseBytes
        self.onGoingAway = onGoingAway
    }

    /// Whether a new call may start on this connection.
    var isUsable: Bool { context != nil && !isGoingAway && nextStreamID < Int32.max - 2 }

    /// Starts a unary call. `message` is already length-prefixed; the answer completes `promise`.
    func call(
        path: String, authority: String, metadata: [(name: String, value: String)], message: ByteBuffer,
        deadline: NIODeadline, promise: EventLoopPromise<GRPCClientResponse>
    ) {
        guard let context, isUsable else {
            return promise.fail(AppChannelError.unreachable("the connection to the app is closing"))
        }
        let remaining = deadline - .now()
        guard remaining > .zero else { return promise.fail(AppChannelError.deadlineExceeded) }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        let headers = Self.requestHeaders(path: path, authority: authority, metadata: metadata, timeout: remaining)
        var call = Call(promise: promise)
        call.timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak self] in
            self?.expire(id)
        }
        calls[id] = call
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        context.write(
            wrapOutboundOut(
                HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message), endStream: true)))),
            promise: nil)
        markFlush(context)
    }

    /// Opens a streamed call: its HEADERS go out at the end of the event loop's turn, with the request's first
    /// message when it has come by then. Fails when the connection is going away or the deadline has passed.
    func openStream(
        path: String, authority: String, metadata: [(name: String, value: String)], deadline: NIODeadline?,
        observer: any AppStreamObserver
    ) -> Result<GRPCClientStream, AppChannelError> {
        guard let context, isUsable else { return .failure(.unreachable("the connection to the app is closing")) }
        let remaining = deadline.map { $0 - .now() }
        if let remaining, remaining <= .zero { return .failure(.deadlineExceeded) }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        let headers = Self.requestHeaders(path: path, authority: authority, metadata: metadata, timeout: remaining)
        let stream = GRPCClientStream(id: id, handler: self, observer: observer, eventLoop: context.eventLoop)
        if let deadline {
            stream.timeout = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [weak stream] in
                stream?.expired()
            }
        }
        streams[id] = stream
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers)))), promise: nil)
        flushSoon(nil)
        return .success(stream)
    }

    /// A call's request headers; `grpc-timeout` when it has a deadline.
    private static func requestHeaders(
        path: String, authority: String, metadata: [(name: String, value: String)], timeout: TimeAmount?
    ) -> HPACKHeaders {
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": path, ":authority": authority,
            "content-type": "application/grpc", "te": "trailers",
        ]
        // Values new on every call (the remaining time, this hop's trace) are not added to HPACK's dynamic table:
        // each would evict an entry that later calls could have reused, and cost a table search to find no match.
        if let timeout {
            headers.add(name: "grpc-timeout", value: Self.grpcTimeout(timeout), indexing: .nonIndexable)
        }
        for (name, value) in metadata where Self.isValid(name: name, value: value) {
            headers.add(name: name, value: value, indexing: name == "traceparent" ? .nonIndexable : .indexable)
        }
        return headers
    }

    // MARK: For streamed calls (from GRPCClientStream)

    /// Writes request DATA for a stream (flushed by `flushSoon`).
    func write(_ id: HTTP2StreamID, data: ByteBuffer, endStream: Bool, promise: EventLoopPromise<Void>) {
        guard let context else {
            return promise.fail(AppChannelError.unreachable("the connection to the app closed"))
        }
        let payload = HTTP2Frame.FramePayload.data(.init(data: .byteBuffer(data), endStream: endStream))
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: payload)), promise: promise)
    }

    /// Resets a stream (and flushes soon).
    func reset(_ id: HTTP2StreamID, _ code: HTTP2ErrorCode) {
        guard let context else { return }
        context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(code))), promise: nil)
        flushSoon(nil)
    }

    /// Returns answer bytes a stream's observer took to the app's stream window.
    func windowUpdate(_ id: HTTP2StreamID, _ increment: Int) {
        guard let context else { return }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .windowUpdate(windowSizeIncrement: increment))),
            promise: nil)
        flushSoon(nil)
    }

    /// Drops a stream that is over.
    func forget(_ id: HTTP2StreamID) {
        streams[id] = nil
    }

    /// Flushes once the current read burst or event loop turn ends, after writing the held message of `stream`:
    /// everything a relay writes in one turn (HEADERS, messages, END_STREAM) shares one flush.
    func flushSoon(_ stream: GRPCClientStream?) {
        if let stream, !stream.awaitingFlush {
            stream.awaitingFlush = true
            flushing.append(stream)
        }
        if isReading {
            needsFlush = true
            return
        }
        guard !flushScheduled, let context else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [weak self] in self?.flushStreams() }
    }

    private func flushStreams() {
        flushScheduled = false
        writeHeld()
        context?.flush()
    }

    private func writeHeld() {
        guard !flushing.isEmpty else { return }
        let streams = flushing
        flushing.removeAll(keepingCapacity: true)
        for stream in streams { stream.flushHeld() }
    }

    /// A header field an HTTP/2 peer accepts: a lowercase token name (not a pseudo-header) and a value without
    /// CR, LF or NUL. Anything else is left out rather than failing the call.
    static func isValid(name: String, value: String) -> Bool {
        !name.isEmpty && !name.hasPrefix(":")
            && name.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || "-_.!#$%&'*+^`|~".utf8.contains(byte)
            }
            && value.utf8.allSatisfy { $0 != 0 && $0 != 0x0A && $0 != 0x0D }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(
            wrapOutboundOut(
                HTTP2Frame(
                    streamID: .rootStream,
                    payload: .windowUpdate(windowSizeIncrement: Self.connectionWindow - 65_535))),
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
        case .rstStream(let code):
            let why = "the app reset the call (\(code))"
            if !complete(frame.streamID, .failure(AppChannelError.unreachable(why))), !streams.isEmpty {
                streams[frame.streamID]?.failed(why)
            }
        case .goAway:
            isGoingAway = true
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        writeHeld()
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent {
            let why = "the call's stream closed without an answer"
            // Every unary call's stream closes after its answer: a stream is looked for only when there are some.
            if !complete(closed.streamID, .failure(AppChannelError.unreachable(why))), !streams.isEmpty {
                streams[closed.streamID]?.failed(why)
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamError { return }
        isGoingAway = true
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isGoingAway = true
        let pending = calls
        calls.removeAll()
        for call in pending.values {
            call.timeout?.cancel()
            call.promise.fail(AppChannelError.unreachable("the connection to the app closed"))
        }
        for stream in Array(streams.values) { stream.failed("the connection to the app closed") }
        flushing.removeAll()
        context.fireChannelInactive()
    }

    private func finish(_ id: HTTP2StreamID, _ result: Result<GRPCClientResponse, any Error>) {
        _ = complete(id, result)
    }

    /// Completes a unary call; false when `id` is not one in progress.
    private func complete(_ id: HTTP2StreamID, _ result: Result<GRPCClientResponse, any Error>) -> Bool {
        guard let call = calls.removeValue(forKey: id) else { return false }
        call.timeout?.cancel()
        call.promise.completeWith(result)
        return true
    }

    private func expire(_ id: HTTP2StreamID) {
        guard calls[id] != nil, let context else { return }
        finish(id, .failure(AppChannelError.deadlineExceeded))
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
    }

    private func onHeaders(_ id: HTTP2StreamID, _ headers: HPACKHeaders, endStream: Bool) {
        guard var call = calls[id] else {
            streams[id]?.received(headers: headers, endStream: endStream)
            return
        }
        if call.headers == nil {
            guard headers.first(name: ":status") == "200" else {
                let status = headers.first(name: ":status") ?? "none"
                return finish(id, .failure(AppChannelError.protocolViolation("HTTP status \(status), not a gRPC answer")))
            }
            call.headers = headers
            calls[id] = call
            guard endStream else { return }
        }
        guard endStream else { return }
        // Trailers, or a trailers-only answer.
        guard let code = headers.first(name: "grpc-status").flatMap({ Int($0) }) else {
            return finish(id, .failure(AppChannelError.protocolViolation("no grpc-status in the trailers")))
        }
        guard code == 0 else {
            let message = headers.first(name: "grpc-message").map(Self.percentDecoded) ?? ""
            return finish(id, .failure(AppChannelError.status(code: RPCCode(rawValue: code) ?? .unknown, message: message)))
        }
        guard var body = call.message, body.readableBytes >= 5, body.readInteger(as: UInt8.self) == 0,
            let length = body.readInteger(as: UInt32.self), body.readableBytes == Int(length)
        else {
            return finish(
                id, .failure(AppChannelError.protocolViolation("the answer is not exactly one uncompressed message")))
        }
        finish(id, .success(GRPCClientResponse(headers: call.headers ?? [:], message: body, trailers: headers)))
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
        // Out of the table while the message grows, so that its buffer is uniquely held and appended to in place
        // (a copy left in the table made every DATA frame copy the whole message so far).
        guard var call = calls.removeValue(forKey: id) else {
            streams[id]?.received(data: bytes, size: size, endStream: data.endStream)
            return
        }
        if (call.message?.readableBytes ?? 0) + bytes.readableBytes > maxResponseBytes + 5 {
            calls[id] = call
            finish(id, .failure(AppChannelError.tooLarge(limit: maxResponseBytes)))
            context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
            return markFlush(context)
        }
        if call.message == nil {
            call.message = bytes
        } else {
            call.message!.writeBuffer(&bytes)
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

    /// A `grpc-timeout` value: at most 8 digits (gRPC over HTTP/2), so the unit grows with the time left —
    /// milliseconds, then seconds, minutes, hours — rounded up, at least 1 ms; at most 99,999,999 hours.
    static func grpcTimeout(_ timeout: TimeAmount) -> String {
        let nanoseconds = max(0, timeout.nanoseconds)
        var value = max(1, nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1))
        for (unit, factor) in [("m", Int64(1)), ("S", 1000), ("M", 60), ("H", 60)] {
            if factor > 1 { value = (value + factor - 1) / factor }
            if value <= 99_999_999 { return "\(value)\(unit)" }
        }
        return "99999999H"
    }

    /// `grpc-message` is percent-encoded (gRPC over HTTP/2).
    static func percentDecoded(_ text: String) -> String {
        text.removingPercentEncoding ?? text
    }
}
