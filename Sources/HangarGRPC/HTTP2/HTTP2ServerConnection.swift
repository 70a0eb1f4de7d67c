import HangarRuntime
import HangarTransport
import NIOCore
import NIOHPACK

/// What an `HTTP2ServerConnection` tells the layer above it (the gRPC calls). Every method runs on the connection's
/// event loop.
protocol HTTP2ServerDelegate: AnyObject {
    /// A request's header block: the start of stream `stream` or, when it already started, its trailers (always with
    /// `endStream`).
    func received(headers: HPACKHeaders, stream: UInt32, endStream: Bool)
    /// Request body bytes (the DATA frame's payload without padding). They count against the stream's receive
    /// window until the delegate reports them consumed (`HTTP2ServerConnection.consumed`): that is the client's
    /// backpressure.
    func received(data: ByteBuffer, stream: UInt32, endStream: Bool)
    /// The stream's queue of unsent response DATA fell back under `Settings.streamWriteBufferBytes` after
    /// `send` had reported it full: the producer may send again.
    func writable(stream: UInt32)
    /// The stream is gone without an answer: reset by the client, or ended by a stream error or the connection's
    /// end. Whatever the delegate holds for it can go; anything it sends for it later is dropped.
    func reset(stream: UInt32)
    /// Whether the stream, whose request has not ended, needs more request bytes to make progress: an unfinished
    /// request message, or a unary request not ended yet. A stream idle by design (a subscription between two
    /// messages) says false and is never timed out.
    func awaitsRequest(stream: UInt32) -> Bool
    /// No byte of the stream's unfinished request arrived for `Settings.progressTimeout` (`after`): the delegate
    /// answers it (gRPC: DEADLINE_EXCEEDED). A stream still unanswered afterwards is reset.
    func requestStalled(stream: UInt32, after: TimeAmount)
    /// The response bytes the connection holds because the client has not read them changed to `bytes`: DATA
    /// waiting for the client's windows, frames written but not yet flushed, and what the socket has not taken
    /// (while the channel is not writable). Under `HTTP2ServerConnection.outboundFloor` this is 0: a client that
    /// reads holds nothing. 0 again when the connection closes.
    func outboundHeld(bytes: Int)
}

extension HTTP2ServerDelegate {
    func outboundHeld(bytes: Int) {}
}

/// A server-side HTTP/2 connection (RFC 9113) made for gRPC, written directly on the channel's bytes instead of
/// `NIOHTTP2Handler`: that handler's per-frame state machines, frame objects and per-stream events were about half
/// of the CPU a unary call cost. This one parses frames in place, keeps one small object per open stream, writes
/// every frame of a read burst into one buffer and flushes once, and encodes response headers from fixed bytes.
///
/// What it implements: the preface and SETTINGS exchange (and ACKs), PING, GOAWAY both ways, RST_STREAM,
/// WINDOW_UPDATE, CONTINUATION, padding, PRIORITY (ignored), HPACK decoding (NIOHPACK's decoder, with a header-list
/// limit), and the stream life cycle of RFC 9113 §5.1 as an explicit `HTTP2StreamState` per stream. Flow control
/// both ways, per stream: response DATA the peer's windows do not allow waits in the stream's own
/// `HTTP2OutboundQueue`, so a stream whose reader is slow holds back only itself, and streams waiting for the
/// connection window take turns a frame at a time; request bytes are credited back to the client (stream
/// WINDOW_UPDATE) when the delegate reports them consumed, the connection window as they arrive (what can be
/// buffered is bounded by the streams times their window). A stream starts with a 64 KiB window and gets the rest
/// of its 1 MiB at its first DATA unless that DATA ended it or it was answered by then: a refused stream (its tenant
/// past its buffered bytes) makes the node read 64 KiB, not 1 MiB, before the client sees the refusal and stops.
/// A stream answered before its request ended is reset with NO_ERROR only once its END_STREAM is written, never
/// while DATA is queued. Response bytes the client does not read (queued for its windows, or not taken by the
/// socket) are reported to the delegate (`outboundHeld`), which counts them against the tenant. It never pushes
/// and never opens streams.
///
/// Connection management (`HTTP2ConnectionState`): a drain (the listener's, or the idle timeout's) is a two-phase
/// GOAWAY — GOAWAY(2^31-1) and a PING, then, on the PING's ACK or after `drainPingTimeout`, a final GOAWAY naming
/// the last stream served; streams opened after it are refused (REFUSED_STREAM) and the connection closes when its
/// streams are done, so no request in flight is lost. Keepalive PINGs go out after `keepaliveInterval` without
/// reads and close the connection when nothing is read within `keepaliveTimeout`.
///
/// Timeouts a client cannot defeat (`Settings`): the preface and first SETTINGS, and every header block once begun,
/// must arrive within `headerTimeout`; a stream whose request is unfinished and waits for bytes (see
/// `HTTP2ServerDelegate.awaitsRequest`) is ended when it makes no progress for `progressTimeout` (progress: at least
/// `progressBytes`, so that a trickle counts as a stall); a connection with no stream open for `maxIdleTime` is
/// drained. They are checked by one timer per connection, armed only while something is watched, at a quarter of
/// the shorter timeout.
///
/// Defences: a frame over 16 KiB, a header block over 64 KiB or 32 frames, more than 128 concurrent streams
/// (REFUSED_STREAM), more than 200 resets by the client in 30 s of streams not yet answered, and a run of empty
/// DATA frames end the connection or the stream with the matching error. Everything a peer can make the server
/// write (SETTINGS and PING ACKs, RST_STREAMs) is bounded by not reading from a peer that does not read: the socket
/// is not read while the channel is not writable.
final class HTTP2ServerConnection: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var maxConcurrentStreams = 128
        /// Unsent response DATA a stream may queue before `send` reports it full (the producer then waits for
        /// `HTTP2ServerDelegate.writable`).
        var streamWriteBufferBytes = 64 * 1024
        /// The stream-level receive window of a stream whose request goes on past its first DATA and was not
        /// answered by then (a refusal), granted by a WINDOW_UPDATE at that DATA.
        var streamWindow = 1 << 20
        /// The stream-level receive window advertised in SETTINGS (at most `streamWindow`): all a client may send on
        /// a stream before hangard has seen its first DATA. A refused stream (a tenant past its buffered bytes)
        /// costs the node this much reading, not `streamWindow`.
        var initialStreamWindow = 64 * 1024
        /// The connection-level receive window, raised from 64 KiB by a WINDOW_UPDATE when the connection starts.
        var connectionWindow = 8 << 20
        /// The largest decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE; HTTP 431-worthy beyond).
        var maxHeaderListSize = 16 * 1024
        /// Time without reading anything after which a keepalive PING goes out; nil: never. gRPC servers' default
        /// (grpc-swift-nio-transport, grpc-go): 2 hours.
        var keepaliveInterval: TimeAmount? = .hours(2)
        /// How long the client has to answer a keepalive PING (anything read counts) before the connection is
        /// closed as dead. gRPC's default: 20 s.
        var keepaliveTimeout = TimeAmount.seconds(20)
        /// Time with no stream open after which the connection is drained and closed; nil: never, gRPC servers'
        /// default (an app keeps its one connection to the daemon for its whole life).
        var maxIdleTime: TimeAmount? = nil
        /// How long a drain waits for the ACK of its PING before sending the final GOAWAY anyway.
        var drainPingTimeout = TimeAmount.seconds(2)
        /// Time within which the client's preface and first SETTINGS, and each header block once begun, must
        /// arrive; nil: no limit.
        var headerTimeout: TimeAmount? = .seconds(10)
        /// Time without a byte of an unfinished request (of a stream waiting for it) after which the stream is
        /// ended; nil: never.
        var progressTimeout: TimeAmount? = .seconds(10)
        /// The request bytes that count as progress for `progressTimeout` (or the end of what the stream awaits).
        var progressBytes = 1024

        init() {}

        /// The settings with the listener's timeouts.
        init(_ timeouts: ConnectionTimeouts) {
            headerTimeout = timeouts.header.map(TimeAmount.init)
            progressTimeout = timeouts.progress.map(TimeAmount.init)
            progressBytes = timeouts.progressBytes
            maxIdleTime = timeouts.idle.map(TimeAmount.init)
        }
    }

    /// The stream window advertised in SETTINGS.
    private var advertisedStreamWindow: Int { min(settings.initialStreamWindow, settings.streamWindow) }

    /// Unread response bytes a connection holds without their being counted: what a client that reads has in
    /// flight.
    static let outboundFloor = 256 * 1024

    static let maxHeaderBlockBytes = 64 * 1024
    static let maxHeaderBlockFrames = 32
    static let maxResetsPerWindow = 200
    static let resetWindow = TimeAmount.seconds(30)
    static let maxSequentialEmptyDataFrames = 16

    /// Per stream that is not closed: its life-cycle state, windows and unsent answer.
    private final class Stream {
        var state = HTTP2StreamState()
        var sendWindow: Int
        var receiveWindow: Int
        /// Request bytes consumed (or discarded) and not yet returned to the client by a WINDOW_UPDATE.
        var consumedUnacked = 0
        /// The layer above has given its whole answer (it may still wait in `queue`): later request bytes are
        /// discarded.
        var answered = false
        /// `send` reported the queue full; `writable` is due when it drains.
        var wantsWritable = false
        var queue = HTTP2OutboundQueue()
        /// When the stream opened or last made progress (while a progress timeout is on): `Settings.progressBytes`
        /// received since the one before, or the first bytes of a message after the stream waited for none.
        var lastProgress: NIODeadline
        /// Request bytes received since `lastProgress`.
        var bytesSinceProgress = 0
        /// Whether the stream was granted `Settings.streamWindow` (beyond the advertised initial window).
        var windowOpened = false

        init(sendWindow: Int, receiveWindow: Int, now: NIODeadline) {
            self.sendWindow = sendWindow
            self.receiveWindow = receiveWindow
            self.lastProgress = now
        }
    }

    private struct HeaderBlock {
        let stream: UInt32
        let endStream: Bool
        var bytes: ByteBuffer
        var frames: Int
    }

    private enum Phase {
        case preface
        case firstSettings
        case open
        case closed
    }

    let delegate: any HTTP2ServerDelegate
    private let settings: Settings
    private var context: ChannelHandlerContext?
    private var phase = Phase.preface
    private var inbound: ByteBuffer?
    private var out: ByteBuffer?
    private var decoder: HPACKDecoder
    private var streams: [UInt32: Stream] = [:]
    /// The highest stream id the client has opened; every lower odd id not in `streams` is closed.
    private var lastStreamID: UInt32 = 0
    private var continuation: HeaderBlock?
    private var peerMaxFrameSize = HTTP2Wire.defaultMaxFrameSize
    private var peerInitialWindow = HTTP2Wire.defaultWindow
    private var connectionSendWindow = HTTP2Wire.defaultWindow
    private var connectionReceiveWindow = HTTP2Wire.defaultWindow
    private var connectionReceivedUnacked = 0
    /// Streams with a non-empty queue, in the order they started waiting; they take turns, a frame each.
    private var waiting: [UInt32] = []
    /// DATA bytes in every stream's queue.
    private var queuedBytes = 0
    /// The outbound bytes last reported to the delegate (`HTTP2ServerDelegate.outboundHeld`).
    private var reportedOutbound = 0
    /// Streams whose END_STREAM went out while the client was still sending; reset with NO_ERROR when the read
    /// burst ends unless their request ended meanwhile (resetting at once would trip clients' own rapid-reset
    /// limits when many calls are refused).
    private var answeredEarly: [UInt32] = []
    private var prefaceSent = false
    private var isReading = false
    /// Writes made outside a read burst wait for `uncork()` while above zero (see `cork()`).
    private var corked = 0
    private var needsFlush = false
    private var readDeferred = false
    /// Graceful close and keepalive: see the type's documentation.
    private var state = HTTP2ConnectionState()
    /// When the last read burst ended (the event loop's clock), while keepalive is on.
    private var lastRead = NIODeadline.uptimeNanoseconds(0)
    /// When the last stream ended (or the connection started), while the idle timeout is on.
    private var idleSince = NIODeadline.uptimeNanoseconds(0)
    private var keepaliveTimer: Scheduled<Void>?
    private var keepaliveTimeoutTimer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var drainTimer: Scheduled<Void>?
    /// The header and progress timeouts' check, while armed (`watch`).
    private var watchTimer: Scheduled<Void>?
    /// When the connection started, for the preface's `headerTimeout`.
    private var startedAt = NIODeadline.uptimeNanoseconds(0)
    /// When the header block in `continuation` began.
    private var continuationSince = NIODeadline.uptimeNanoseconds(0)
    private var resets = 0
    private var resetWindowStart = NIODeadline.uptimeNanoseconds(0)
    private var emptyDataFrames = 0

    init(delegate: any HTTP2ServerDelegate, settings: Settings = Settings()) {
        self.delegate = delegate
        self.settings = settings
        self.connectionReceiveWindow = settings.connectionWindow
        self.decoder = HPACKDecoder(
            allocator: ByteBufferAllocator(), maxDynamicTableSize: HPACKDecoder.maxDynamicTableSize,
            maxHeaderListSize: settings.maxHeaderListSize)
    }

    // MARK: What the layer above uses

    var eventLoop: (any EventLoop)? { context?.eventLoop }
    var channel: (any Channel)? { context?.channel }

    /// A complete gRPC response: the response head (the fixed one unless the method sends headers of its own), one
    /// message (already length-prefixed) and trailers.
    func respond(_ id: UInt32, head: [UInt8] = HPACKLiteral.grpcResponseHead, message: ByteBuffer, trailers: [UInt8]) {
        guard let stream = streams[id], !stream.answered else { return }
        stream.answered = true
        writeHeaders(id, head, endStream: false)
        enqueue(id, stream, data: message, endStream: false)
        enqueue(id, stream, headers: trailers)
        afterWrite()
    }

    /// A response of headers alone that ends the stream (a gRPC trailers-only response, or trailers after
    /// streamed messages).
    func respond(_ id: UInt32, headersOnly block: [UInt8]) {
        guard let stream = streams[id], !stream.answered else { return }
        stream.answered = true
        enqueue(id, stream, headers: block)
        afterWrite()
    }

    /// A response of headers and a body that ends the stream (an HTTP error for a request that is not gRPC).
    func respond(_ id: UInt32, headers block: [UInt8], body: ByteBuffer) {
        guard let stream = streams[id], !stream.answered else { return }
        stream.answered = true
        writeHeaders(id, block, endStream: false)
        enqueue(id, stream, data: body, endStream: true)
        afterWrite()
    }

    /// The head of a response whose body follows with `send` (a streaming call).
    func sendHeaders(_ id: UInt32, _ block: [UInt8]) {
        guard let stream = streams[id], !stream.answered else { return }
        writeHeaders(id, block, endStream: false)
        afterWrite()
    }

    /// Response DATA for a stream whose head was sent. Returns whether the stream can take more: false once its
    /// unsent DATA reaches `Settings.streamWriteBufferBytes`; `HTTP2ServerDelegate.writable` follows when it
    /// drains. Nothing is lost either way (the queue is the producer's to bound).
    @discardableResult
    func send(_ id: UInt32, _ data: ByteBuffer) -> Bool {
        guard let stream = streams[id], !stream.answered else { return false }
        enqueue(id, stream, data: data, endStream: false)
        afterWrite()
        guard stream.queue.dataBytes < settings.streamWriteBufferBytes else {
            stream.wantsWritable = true
            return false
        }
        return true
    }

    /// Whether the stream is open and its unsent DATA is under `Settings.streamWriteBufferBytes`.
    func isWritable(_ id: UInt32) -> Bool {
        guard let stream = streams[id], !stream.answered else { return false }
        return stream.queue.dataBytes < settings.streamWriteBufferBytes
    }

    /// Request bytes of `stream` the layer above has consumed: they go back to the client as stream window.
    func consumed(_ id: UInt32, bytes: Int) {
        guard bytes > 0, let stream = streams[id] else { return }
        credit(id, stream, bytes)
        if !isReading, let context { flush(context) }
    }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Whatever is still scheduled would hold this handler (and its buffers) until it fires.
        cancelTimers()
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    /// The server preface: SETTINGS, then the connection window raised past HTTP/2's 64 KiB.
    private func start(_ context: ChannelHandlerContext) {
        // Never for a connection already closed: its timers (keepalive: 2 hours) would keep it for that long.
        guard !prefaceSent, phase != .closed, context.channel.isActive else { return }
        prefaceSent = true
        let entries: [(UInt16, UInt32)] = [
            (HTTP2Wire.Setting.maxConcurrentStreams, UInt32(settings.maxConcurrentStreams)),
            (HTTP2Wire.Setting.initialWindowSize, UInt32(advertisedStreamWindow)),
            (HTTP2Wire.Setting.maxHeaderListSize, UInt32(settings.maxHeaderListSize)),
            (HTTP2Wire.Setting.enablePush, 0),
        ]
        var buffer = output(context)
        buffer.writeHTTP2FrameHeader(length: entries.count * 6, type: HTTP2Wire.FrameType.settings, flags: 0, stream: 0)
        for (identifier, value) in entries {
            buffer.writeInteger(identifier)
            buffer.writeInteger(value)
        }
        let increment = settings.connectionWindow - HTTP2Wire.defaultWindow
        if increment > 0 {
            buffer.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.windowUpdate, flags: 0, stream: 0)
            buffer.writeInteger(UInt32(increment))
        }
        out = buffer
        needsFlush = true
        flush(context)
        // A peer gone already fails that write and the connection closes inside `flush` (`channelInactive` has
        // cancelled the timers): arming them now would keep it, its buffers and handlers, for hours.
        guard phase != .closed else { return }
        let now = context.eventLoop.now
        lastRead = now
        idleSince = now
        startedAt = now
        if let interval = settings.keepaliveInterval { scheduleKeepalive(context, at: now + interval) }
        if let idle = settings.maxIdleTime { scheduleIdleCheck(context, at: now + idle) }
        armWatch(context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        var bytes = unwrapInboundIn(data)
        if var pending = inbound {
            inbound = nil
            pending.writeBuffer(&bytes)
            bytes = pending
        }
        process(context, &bytes)
        if bytes.readableBytes > 0, phase != .closed {
            bytes.discardReadBytes()
            inbound = bytes
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        if settings.keepaliveInterval != nil { lastRead = context.eventLoop.now }
        if !answeredEarly.isEmpty {
            for id in answeredEarly {
                guard let stream = streams[id], stream.state.phase == .halfClosedLocal else { continue }
                writeReset(id, .noError)
                stream.state.reset()
                settle(id, stream)
            }
            answeredEarly.removeAll()
        }
        flush(context)
        closeIfDone(context)
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        // A peer that does not read its responses is not read either: what it can make the server write stays
        // within the channel's write buffer limits.
        if context.channel.isWritable {
            context.read()
        } else {
            readDeferred = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        noteOutbound(context)
        if readDeferred && context.channel.isWritable {
            readDeferred = false
            context.read()
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ListenerDrainEvent { drain(context) }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        phase = .closed
        state.close()
        cancelTimers()
        let ids = Array(streams.keys)
        streams.removeAll()
        waiting.removeAll()
        queuedBytes = 0
        out = nil
        for id in ids { delegate.reset(stream: id) }
        if reportedOutbound != 0 {
            reportedOutbound = 0
            delegate.outboundHeld(bytes: 0)
        }
        context.fireChannelInactive()
    }

    // MARK: Frames in

    private func process(_ context: ChannelHandlerContext, _ bytes: inout ByteBuffer) {
        if phase == .preface {
            guard bytes.readableBytes >= HTTP2Wire.preface.count else {
                let matches = bytes.readableBytesView.elementsEqual(HTTP2Wire.preface.prefix(bytes.readableBytes))
                if !matches { connectionError(context, .protocolError, "expected the HTTP/2 connection preface") }
                return
            }
            let matches = bytes.readableBytesView.prefix(HTTP2Wire.preface.count).elementsEqual(HTTP2Wire.preface)
            guard matches else {
                return connectionError(context, .protocolError, "expected the HTTP/2 connection preface")
            }
            bytes.moveReaderIndex(forwardBy: HTTP2Wire.preface.count)
            phase = .firstSettings
        }
        while phase != .closed, let header = HTTP2Wire.FrameHeader.peek(bytes) {
            guard header.length <= HTTP2Wire.defaultMaxFrameSize else {
                return connectionError(
                    context, .frameSizeError, "frame of \(header.length) bytes is over SETTINGS_MAX_FRAME_SIZE")
            }
            guard bytes.readableBytes >= HTTP2Wire.frameHeaderBytes + header.length else { return }
            bytes.moveReaderIndex(forwardBy: HTTP2Wire.frameHeaderBytes)
            var payload = bytes.readSlice(length: header.length)!
            if phase == .firstSettings {
                guard header.type == HTTP2Wire.FrameType.settings, header.flags & HTTP2Wire.Flag.ack == 0 else {
                    return connectionError(context, .protocolError, "the client preface must end with SETTINGS")
                }
                phase = .open
            }
            frame(context, header, &payload)
        }
    }

    private func frame(_ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer) {
        if let block = continuation, header.type != HTTP2Wire.FrameType.continuation || header.stream != block.stream {
            return connectionError(context, .protocolError, "expected CONTINUATION of stream \(block.stream)")
        }
        switch header.type {
        case HTTP2Wire.FrameType.data: onData(context, header, &payload)
        case HTTP2Wire.FrameType.headers: onHeaders(context, header, &payload)
        case HTTP2Wire.FrameType.continuation: onContinuation(context, header, &payload)
        case HTTP2Wire.FrameType.settings: onSettings(context, header, &payload)
        case HTTP2Wire.FrameType.ping: onPing(context, header, &payload)
        case HTTP2Wire.FrameType.windowUpdate: onWindowUpdate(context, header, &payload)
        case HTTP2Wire.FrameType.rstStream: onReset(context, header, &payload)
        case HTTP2Wire.FrameType.goAway:
            guard header.stream == 0 else { return connectionError(context, .protocolError, "GOAWAY on a stream") }
            state.receivedGoAway()
        case HTTP2Wire.FrameType.priority:
            guard header.stream != 0 else { return connectionError(context, .protocolError, "PRIORITY on stream 0") }
            if header.length != 5 { streamError(context, header.stream, .frameSizeError) }
        case HTTP2Wire.FrameType.pushPromise:
            connectionError(context, .protocolError, "a client cannot send PUSH_PROMISE")
        default:
            break  // unknown frame types are ignored (RFC 9113 §4.1)
        }
    }

    /// Strips padding (RFC 9113 §6.1); nil when the padding is longer than the payload.
    private func unpad(_ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer) -> Bool {
        guard header.flags & HTTP2Wire.Flag.padded != 0 else { return true }
        guard let padding = payload.readInteger(as: UInt8.self), Int(padding) <= payload.readableBytes else {
            return false
        }
        payload.moveWriterIndex(to: payload.writerIndex - Int(padding))
        return true
    }

    private func onData(_ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer) {
        let id = header.stream
        guard id != 0 else { return connectionError(context, .protocolError, "DATA on stream 0") }
        guard id <= lastStreamID, id & 1 == 1 else {
            return connectionError(context, .protocolError, "DATA on idle stream \(id)")
        }
        // The whole payload, padding included, counts against the connection's window even when the stream is gone.
        connectionReceiveWindow -= header.length
        guard connectionReceiveWindow >= 0 else {
            return connectionError(context, .flowControlError, "DATA beyond the connection's window")
        }
        connectionReceivedUnacked += header.length
        if connectionReceivedUnacked >= settings.connectionWindow / 4 {
            writeWindowUpdate(0, connectionReceivedUnacked)
            connectionReceiveWindow += connectionReceivedUnacked
            connectionReceivedUnacked = 0
        }
        guard unpad(header, &payload) else {
            return connectionError(context, .protocolError, "DATA padding longer than the frame")
        }
        let endStream = header.flags & HTTP2Wire.Flag.endStream != 0
        if payload.readableBytes == 0 && !endStream {
            emptyDataFrames += 1
            if emptyDataFrames > Self.maxSequentialEmptyDataFrames {
                return connectionError(context, .enhanceYourCalm, "too many empty DATA frames")
            }
        } else {
            emptyDataFrames = 0
        }
        guard let stream = streams[id] else { return }  // closed: frames in flight are ignored
        do {
            try stream.state.receiveData(endStream: endStream)
        } catch {
            return streamError(context, id, .streamClosed)
        }
        stream.receiveWindow -= header.length
        guard stream.receiveWindow >= 0 else { return streamError(context, id, .flowControlError) }
        if settings.progressTimeout != nil && !endStream && !stream.answered {
            // Progress is `progressBytes` since the last, so that a trickle (a byte every few seconds) stalls like
            // silence. A stream that awaited nothing (a streaming call between messages) starts afresh.
            if !delegate.awaitsRequest(stream: id) {
                stream.lastProgress = context.eventLoop.now
                stream.bytesSinceProgress = 0
            }
            stream.bytesSinceProgress += header.length
            if stream.bytesSinceProgress >= settings.progressBytes {
                stream.lastProgress = context.eventLoop.now
                stream.bytesSinceProgress = 0
            }
        }
        if stream.answered {
            // Answered already: the rest of the request is not needed, and its window goes back at once.
            credit(id, stream, header.length)
            return settle(id, stream)
        }
        // Padding is nobody's to consume.
        credit(id, stream, header.length - payload.readableBytes)
        delegate.received(data: payload, stream: id, endStream: endStream)
        if !stream.windowOpened && !endStream && !stream.answered {
            // The request goes on and was not refused: the rest of the stream window, at once.
            stream.windowOpened = true
            let more = settings.streamWindow - advertisedStreamWindow
            if more > 0 {
                writeWindowUpdate(id, more)
                stream.receiveWindow += more
            }
        }
        settle(id, stream)
    }

    private func onHeaders(
        _ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer
    ) {
        guard header.stream != 0 else { return connectionError(context, .protocolError, "HEADERS on stream 0") }
        guard unpad(header, &payload) else {
            return connectionError(context, .protocolError, "HEADERS padding longer than the frame")
        }
        if header.flags & HTTP2Wire.Flag.priority != 0 {
            guard payload.readableBytes >= 5 else {
                return connectionError(context, .frameSizeError, "HEADERS too short for its priority")
            }
            payload.moveReaderIndex(forwardBy: 5)
        }
        let block = HeaderBlock(
            stream: header.stream, endStream: header.flags & HTTP2Wire.Flag.endStream != 0, bytes: payload, frames: 1)
        if header.flags & HTTP2Wire.Flag.endHeaders != 0 {
            headerBlock(context, block)
        } else {
            continuation = block
            if settings.headerTimeout != nil {
                continuationSince = context.eventLoop.now
                armWatch(context)
            }
        }
    }

    private func onContinuation(
        _ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer
    ) {
        guard var block = continuation else {
            return connectionError(context, .protocolError, "CONTINUATION without HEADERS")
        }
        continuation = nil
        block.frames += 1
        guard block.bytes.readableBytes + payload.readableBytes <= Self.maxHeaderBlockBytes,
            block.frames <= Self.maxHeaderBlockFrames
        else {
            return connectionError(context, .enhanceYourCalm, "header block too large")
        }
        block.bytes.writeBuffer(&payload)
        if header.flags & HTTP2Wire.Flag.endHeaders != 0 {
            headerBlock(context, block)
        } else {
            continuation = block
        }
    }

    private func headerBlock(_ context: ChannelHandlerContext, _ block: HeaderBlock) {
        var bytes = block.bytes
        let headers: HPACKHeaders
        do {
            // Always decoded, even for a stream that is refused or closed: the decoder's table must stay in step.
            headers = try decoder.decodeHeaders(from: &bytes)
        } catch {
            return connectionError(context, .compressionError, "cannot decode a header block: \(error)")
        }
        let id = block.stream
        if let stream = streams[id] {
            // Trailers: they must end the request.
            do {
                try stream.state.receiveHeaders(endStream: block.endStream)
            } catch {
                return streamError(context, id, error == .protocolError ? .protocolError : .streamClosed)
            }
            if !stream.answered { delegate.received(headers: headers, stream: id, endStream: true) }
            return settle(id, stream)
        }
        guard id & 1 == 1 else { return connectionError(context, .protocolError, "even stream id \(id) from a client") }
        guard id > lastStreamID else { return }  // a closed stream: frames in flight are ignored
        lastStreamID = id
        guard state.acceptsStreams else {
            // After the final GOAWAY: not processed, so the client may retry it elsewhere (RFC 9113 §6.8).
            writeReset(id, .refusedStream)
            return
        }
        guard streams.count < settings.maxConcurrentStreams else {
            writeReset(id, .refusedStream)
            return
        }
        let stream = Stream(
            sendWindow: peerInitialWindow, receiveWindow: advertisedStreamWindow,
            now: settings.progressTimeout != nil && !block.endStream ? context.eventLoop.now : .uptimeNanoseconds(0))
        do {
            try stream.state.receiveHeaders(endStream: block.endStream)
        } catch {
            return streamError(context, id, .protocolError)  // an idle stream accepts any HEADERS; kept total
        }
        streams[id] = stream
        if !block.endStream && settings.progressTimeout != nil { armWatch(context) }
        delegate.received(headers: headers, stream: id, endStream: block.endStream)
        settle(id, stream)
    }

    private func onSettings(
        _ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer
    ) {
        guard header.stream == 0 else { return connectionError(context, .protocolError, "SETTINGS on a stream") }
        if header.flags & HTTP2Wire.Flag.ack != 0 {
            guard header.length == 0 else {
                return connectionError(context, .frameSizeError, "SETTINGS ACK with a payload")
            }
            return
        }
        guard header.length % 6 == 0 else {
            return connectionError(context, .frameSizeError, "SETTINGS length not a multiple of 6")
        }
        while let identifier = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self) {
            switch identifier {
            case HTTP2Wire.Setting.enablePush:
                guard value <= 1 else { return connectionError(context, .protocolError, "SETTINGS_ENABLE_PUSH \(value)") }
            case HTTP2Wire.Setting.initialWindowSize:
                guard value <= UInt32(HTTP2Wire.maxWindow) else {
                    return connectionError(context, .flowControlError, "SETTINGS_INITIAL_WINDOW_SIZE \(value)")
                }
                let delta = Int(value) - peerInitialWindow
                peerInitialWindow = Int(value)
                for stream in streams.values {
                    stream.sendWindow += delta
                    guard stream.sendWindow <= HTTP2Wire.maxWindow else {
                        return connectionError(context, .flowControlError, "a stream window over 2^31-1")
                    }
                }
            case HTTP2Wire.Setting.maxFrameSize:
                guard value >= 16_384, value <= 16_777_215 else {
                    return connectionError(context, .protocolError, "SETTINGS_MAX_FRAME_SIZE \(value)")
                }
                peerMaxFrameSize = Int(value)
            default:
                break  // the header table (never used: responses are encoded without it) and advisory limits
            }
        }
        var out = output(context)
        out.writeHTTP2FrameHeader(length: 0, type: HTTP2Wire.FrameType.settings, flags: HTTP2Wire.Flag.ack, stream: 0)
        self.out = out
        needsFlush = true
        sendWaiting()
    }

    private func onPing(_ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer) {
        guard header.stream == 0 else { return connectionError(context, .protocolError, "PING on a stream") }
        guard header.length == 8 else { return connectionError(context, .frameSizeError, "PING not 8 bytes") }
        guard header.flags & HTTP2Wire.Flag.ack == 0 else {
            switch state.receivedPingAck(payload.readInteger(as: UInt64.self) ?? 0) {
            case .keepalive: keepaliveTimeoutTimer?.cancel()
            case .drain: finishDrain(context)
            case .unknown: break
            }
            return
        }
        var out = output(context)
        out.writeHTTP2FrameHeader(length: 8, type: HTTP2Wire.FrameType.ping, flags: HTTP2Wire.Flag.ack, stream: 0)
        out.writeBuffer(&payload)
        self.out = out
        needsFlush = true
    }

    private func onWindowUpdate(
        _ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer
    ) {
        guard header.length == 4, let raw = payload.readInteger(as: UInt32.self) else {
            return connectionError(context, .frameSizeError, "WINDOW_UPDATE not 4 bytes")
        }
        let increment = Int(raw & 0x7FFF_FFFF)
        let id = header.stream
        if id == 0 {
            guard increment > 0 else { return connectionError(context, .protocolError, "WINDOW_UPDATE of 0") }
            connectionSendWindow += increment
            guard connectionSendWindow <= HTTP2Wire.maxWindow else {
                return connectionError(context, .flowControlError, "connection window over 2^31-1")
            }
        } else {
            guard id <= lastStreamID else {
                return connectionError(context, .protocolError, "WINDOW_UPDATE on idle stream \(id)")
            }
            guard let stream = streams[id] else { return }
            guard increment > 0 else { return streamError(context, id, .protocolError) }
            stream.sendWindow += increment
            guard stream.sendWindow <= HTTP2Wire.maxWindow else { return streamError(context, id, .flowControlError) }
        }
        sendWaiting()
    }

    private func onReset(_ context: ChannelHandlerContext, _ header: HTTP2Wire.FrameHeader, _ payload: inout ByteBuffer) {
        guard header.stream != 0 else { return connectionError(context, .protocolError, "RST_STREAM on stream 0") }
        guard header.length == 4 else { return connectionError(context, .frameSizeError, "RST_STREAM not 4 bytes") }
        guard header.stream <= lastStreamID else {
            return connectionError(context, .protocolError, "RST_STREAM on idle stream \(header.stream)")
        }
        // A stream closed here already, or answered, costs nothing to reset: a client cancelling after a refusal
        // (RESOURCE_EXHAUSTED, REFUSED_STREAM) is not the rapid-reset attack, which resets work in progress.
        guard let stream = streams[header.stream] else { return }
        if !stream.answered {
            let now = NIODeadline.now()
            if now - resetWindowStart > Self.resetWindow {
                resetWindowStart = now
                resets = 0
            }
            resets += 1
            guard resets <= Self.maxResetsPerWindow else {
                return connectionError(context, .enhanceYourCalm, "too many streams reset")
            }
        }
        stream.state.reset()
        settle(header.stream, stream)
        delegate.reset(stream: header.stream)
    }

    // MARK: Frames out

    private func output(_ context: ChannelHandlerContext) -> ByteBuffer {
        if let out {
            self.out = nil
            return out
        }
        return context.channel.allocator.buffer(capacity: 512)
    }

    private func writeHeaders(_ id: UInt32, _ block: [UInt8], endStream: Bool) {
        guard let context else { return }
        var out = output(context)
        var offset = 0
        var first = true
        repeat {
            let length = min(block.count - offset, peerMaxFrameSize)
            let last = offset + length == block.count
            var flags: UInt8 = last ? HTTP2Wire.Flag.endHeaders : 0
            if first && endStream { flags |= HTTP2Wire.Flag.endStream }
            out.writeHTTP2FrameHeader(
                length: length, type: first ? HTTP2Wire.FrameType.headers : HTTP2Wire.FrameType.continuation,
                flags: flags, stream: id)
            out.writeBytes(block[offset..<(offset + length)])
            offset += length
            first = false
        } while offset < block.count
        self.out = out
        needsFlush = true
    }

    private func writeReset(_ id: UInt32, _ code: HTTP2Wire.ErrorCode) {
        guard let context else { return }
        var out = output(context)
        out.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.rstStream, flags: 0, stream: id)
        out.writeInteger(code.rawValue)
        self.out = out
        needsFlush = true
    }

    private func writeWindowUpdate(_ id: UInt32, _ increment: Int) {
        guard let context else { return }
        var out = output(context)
        out.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.windowUpdate, flags: 0, stream: id)
        out.writeInteger(UInt32(increment))
        self.out = out
        needsFlush = true
    }

    private func writePing(_ payload: UInt64) {
        guard let context else { return }
        var out = output(context)
        out.writeHTTP2FrameHeader(length: 8, type: HTTP2Wire.FrameType.ping, flags: 0, stream: 0)
        out.writeInteger(payload)
        self.out = out
        needsFlush = true
    }

    private func writeGoAway(lastStream: UInt32, _ code: HTTP2Wire.ErrorCode, debug: String) {
        guard let context else { return }
        let debugBytes = Array(debug.utf8.prefix(256))
        var out = output(context)
        out.writeHTTP2FrameHeader(
            length: 8 + debugBytes.count, type: HTTP2Wire.FrameType.goAway, flags: 0, stream: 0)
        out.writeInteger(lastStream & 0x7FFF_FFFF)
        out.writeInteger(code.rawValue)
        out.writeBytes(debugBytes)
        self.out = out
        needsFlush = true
    }

    /// Writes DATA now as far as the windows allow and queues the rest; a stream with a queue keeps its order.
    private func enqueue(_ id: UInt32, _ stream: Stream, data: ByteBuffer, endStream: Bool) {
        guard stream.queue.isEmpty, let context else {
            return queue(id, stream) { $0.append(data: data, endStream: endStream) }
        }
        var data = data
        var out = output(context)
        while true {
            let length = min(data.readableBytes, stream.sendWindow, connectionSendWindow, peerMaxFrameSize)
            if data.readableBytes > 0 && length <= 0 { break }
            var chunk = data.readSlice(length: length)!
            let last = data.readableBytes == 0
            out.writeHTTP2FrameHeader(
                length: length, type: HTTP2Wire.FrameType.data, flags: last && endStream ? HTTP2Wire.Flag.endStream : 0,
                stream: id)
            out.writeBuffer(&chunk)
            stream.sendWindow -= length
            connectionSendWindow -= length
            if last { break }
        }
        self.out = out
        needsFlush = true
        if data.readableBytes > 0 {
            queue(id, stream) { $0.append(data: data, endStream: endStream) }
        } else if endStream {
            wroteEndStream(id, stream)
        }
    }

    /// Writes a header block that ends the stream (trailers) now, or after the DATA queued before it.
    private func enqueue(_ id: UInt32, _ stream: Stream, headers: [UInt8]) {
        guard stream.queue.isEmpty else { return queue(id, stream) { $0.append(headers: headers, endStream: true) } }
        writeHeaders(id, headers, endStream: true)
        wroteEndStream(id, stream)
    }

    private func queue(_ id: UInt32, _ stream: Stream, _ append: (inout HTTP2OutboundQueue) -> Void) {
        if stream.queue.isEmpty { waiting.append(id) }
        let before = stream.queue.dataBytes
        append(&stream.queue)
        queuedBytes += stream.queue.dataBytes - before
    }

    /// Sends what the windows now allow of the waiting streams' queues: a frame per stream per turn, so streams
    /// share the connection window; a stream without window of its own waits without holding up the others.
    private func sendWaiting() {
        guard !waiting.isEmpty, let context else { return }
        var progressed = true
        while progressed && !waiting.isEmpty {
            progressed = false
            var index = 0
            while index < waiting.count {
                let id = waiting[index]
                guard let stream = streams[id], !stream.queue.isEmpty else {
                    waiting.remove(at: index)
                    continue
                }
                if sendNext(context, id, stream) { progressed = true }
                if stream.queue.isEmpty {
                    waiting.remove(at: index)
                } else {
                    index += 1
                }
                // Under half the limit, so that a producer is not woken for every frame.
                if stream.wantsWritable && !stream.answered
                    && stream.queue.dataBytes < settings.streamWriteBufferBytes / 2
                {
                    stream.wantsWritable = false
                    delegate.writable(stream: id)
                }
            }
        }
    }

    /// Writes the next frame of a stream's queue; whether there was one the windows allowed.
    private func sendNext(_ context: ChannelHandlerContext, _ id: UInt32, _ stream: Stream) -> Bool {
        let window = min(stream.sendWindow, connectionSendWindow)
        let before = stream.queue.dataBytes
        let next = stream.queue.next(window: window, maxFrameSize: peerMaxFrameSize)
        queuedBytes -= before - stream.queue.dataBytes
        switch next {
        case nil:
            return false
        case .headers(let block, let endStream):
            writeHeaders(id, block, endStream: endStream)
            if endStream { wroteEndStream(id, stream) }
        case .data(var chunk, let endStream):
            let length = chunk.readableBytes
            var out = output(context)
            out.writeHTTP2FrameHeader(
                length: length, type: HTTP2Wire.FrameType.data, flags: endStream ? HTTP2Wire.Flag.endStream : 0,
                stream: id)
            out.writeBuffer(&chunk)
            self.out = out
            needsFlush = true
            stream.sendWindow -= length
            connectionSendWindow -= length
            if endStream { wroteEndStream(id, stream) }
        }
        return true
    }

    /// The stream's END_STREAM is written: it is closed if the request has ended, else the rest of the request is
    /// refused with RST_STREAM(NO_ERROR) (RFC 9113 §8.1), at the end of the read burst when one is under way.
    private func wroteEndStream(_ id: UInt32, _ stream: Stream) {
        stream.state.sendEndStream()
        if stream.state.phase == .halfClosedLocal {
            if isReading {
                answeredEarly.append(id)
            } else {
                writeReset(id, .noError)
                stream.state.reset()
            }
        }
        settle(id, stream)
    }

    /// Holds back the flush of what the layer above writes outside a read burst until `uncork()`: a batch of
    /// messages sent at once (a streaming subscription's events) goes out in one write rather than one each.
    func cork() { corked += 1 }

    func uncork() {
        corked -= 1
        if corked == 0 { afterWrite() }
    }

    /// After the layer above wrote outside a read burst: what it wrote goes out now (or at `uncork()`).
    private func afterWrite() {
        guard let context else { return }
        if !isReading, corked == 0 {
            flush(context)
            closeIfDone(context)
        } else {
            // Within a read burst answers gather in `out` until its end: counted as they grow.
            noteOutbound(context)
        }
    }

    /// Returns consumed request bytes to the client, a WINDOW_UPDATE once half the stream window is owed (none
    /// after the request ended: the client sends no more).
    private func credit(_ id: UInt32, _ stream: Stream, _ bytes: Int) {
        guard bytes > 0 else { return }
        stream.consumedUnacked += bytes
        if !stream.state.isRemoteClosed && stream.consumedUnacked >= settings.streamWindow / 2 {
            writeWindowUpdate(id, stream.consumedUnacked)
            stream.receiveWindow += stream.consumedUnacked
            stream.consumedUnacked = 0
        }
    }

    /// Forgets a stream once it is closed: the one place streams leave the table.
    private func settle(_ id: UInt32, _ stream: Stream) {
        guard stream.state.isClosed, streams.removeValue(forKey: id) != nil else { return }
        queuedBytes -= stream.queue.dataBytes  // a reset stream's unsent DATA goes with it
        if streams.isEmpty, settings.maxIdleTime != nil, let context { idleSince = context.eventLoop.now }
    }

    // MARK: Connection management

    /// The first phase of a graceful close: GOAWAY(2^31-1) and a PING whose ACK (or `drainPingTimeout`) brings
    /// the final GOAWAY.
    private func drain(_ context: ChannelHandlerContext) {
        guard phase != .closed, state.drain() else { return }
        writeGoAway(lastStream: UInt32(Int32.max), .noError, debug: "")
        writePing(HTTP2ConnectionState.drainPing)
        flush(context)
        guard phase != .closed else { return }  // the write failed and closed it: no timer (see `start`)
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        drainTimer = context.eventLoop.scheduleTask(in: settings.drainPingTimeout) {
            guard let context = bound.value.context else { return }
            bound.value.finishDrain(context)
        }
    }

    /// The second phase: the final GOAWAY with the last stream served; the connection closes when those are done.
    private func finishDrain(_ context: ChannelHandlerContext) {
        guard phase != .closed, let last = state.finishDrain(lastStreamID: lastStreamID) else { return }
        drainTimer?.cancel()
        writeGoAway(lastStream: last, .noError, debug: "")
        if !isReading {
            flush(context)
            closeIfDone(context)
        }
    }

    private func scheduleKeepalive(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        // Never once closed: `cancelTimers` ran already, and the task would keep the connection for 2 hours.
        guard phase != .closed else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            guard let context = bound.value.context else { return }
            bound.value.keepaliveDue(context)
        }
    }

    /// Sends a keepalive PING if nothing was read for `keepaliveInterval`, else waits until that is so.
    private func keepaliveDue(_ context: ChannelHandlerContext) {
        guard phase != .closed, let interval = settings.keepaliveInterval else { return }
        let now = context.eventLoop.now
        guard now >= lastRead + interval else { return scheduleKeepalive(context, at: lastRead + interval) }
        scheduleKeepalive(context, at: now + interval)
        guard state.sendKeepalive() else { return }
        writePing(HTTP2ConnectionState.keepalivePing)
        if !isReading { flush(context) }
        guard phase != .closed else { return }  // the write failed and closed it: no timer (see `start`)
        let sent = now
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        keepaliveTimeoutTimer = context.eventLoop.scheduleTask(in: settings.keepaliveTimeout) {
            let connection = bound.value
            guard let context = connection.context, connection.state.awaitingKeepalive,
                connection.lastRead <= sent
            else { return }
            connection.connectionError(context, .noError, "keepalive PING not acknowledged")
        }
    }

    private func scheduleIdleCheck(_ context: ChannelHandlerContext, at deadline: NIODeadline) {
        guard phase != .closed else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleTimer = context.eventLoop.scheduleTask(deadline: deadline) {
            guard let context = bound.value.context else { return }
            bound.value.idleCheck(context)
        }
    }

    /// Drains the connection once no stream has been open for `maxIdleTime`; otherwise checks again when that
    /// could first be so.
    private func idleCheck(_ context: ChannelHandlerContext) {
        guard phase != .closed, let idle = settings.maxIdleTime else { return }
        let now = context.eventLoop.now
        guard streams.isEmpty else { return scheduleIdleCheck(context, at: now + idle) }
        guard now >= idleSince + idle else { return scheduleIdleCheck(context, at: idleSince + idle) }
        drain(context)
    }

    /// Arms the header and progress timeouts' check unless it is armed: a nil test when it is, so that every
    /// stream that opens may call it.
    private func armWatch(_ context: ChannelHandlerContext) {
        guard watchTimer == nil, phase != .closed else { return }
        let shortest = [settings.headerTimeout, settings.progressTimeout].compactMap { $0 }.min()
        guard let shortest else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let tick = TimeAmount.nanoseconds(max(shortest.nanoseconds / 4, 50_000_000))
        watchTimer = context.eventLoop.scheduleTask(in: tick) {
            bound.value.watch()
        }
    }

    /// Ends what is past its timeout: a connection whose preface or header block is late, and the streams whose
    /// unfinished request made no progress (`HTTP2ServerDelegate.requestStalled`). Re-arms while anything is left
    /// to watch.
    private func watch() {
        watchTimer = nil
        guard let context, phase != .closed else { return }
        let now = context.eventLoop.now
        var watching = false
        if let limit = settings.headerTimeout {
            if phase == .preface || phase == .firstSettings {
                guard now - startedAt < limit else {
                    let within = ConnectionTimeouts.describe(limit)
                    return connectionError(context, .protocolError, "no HTTP/2 preface within \(within)")
                }
                watching = true
            }
            if continuation != nil {
                guard now - continuationSince < limit else {
                    let within = ConnectionTimeouts.describe(limit)
                    return connectionError(context, .enhanceYourCalm, "a header block not completed within \(within)")
                }
                watching = true
            }
        }
        if let limit = settings.progressTimeout {
            var stalled: [UInt32] = []
            for (id, stream) in streams where !stream.state.isRemoteClosed && !stream.answered {
                watching = true
                if now - stream.lastProgress >= limit && delegate.awaitsRequest(stream: id) { stalled.append(id) }
            }
            for id in stalled {
                delegate.requestStalled(stream: id, after: limit)
                if let stream = streams[id], !stream.answered { streamError(context, id, .cancel) }
            }
            if !stalled.isEmpty {
                flush(context)
                closeIfDone(context)
            }
        }
        if watching { armWatch(context) }
    }

    private func cancelTimers() {
        keepaliveTimer?.cancel()
        keepaliveTimeoutTimer?.cancel()
        idleTimer?.cancel()
        drainTimer?.cancel()
        watchTimer?.cancel()
        watchTimer = nil
    }

    private func streamError(_ context: ChannelHandlerContext, _ id: UInt32, _ code: HTTP2Wire.ErrorCode) {
        writeReset(id, code)
        guard let stream = streams[id] else { return }
        stream.state.reset()
        settle(id, stream)
        delegate.reset(stream: id)
    }

    private func connectionError(_ context: ChannelHandlerContext, _ code: HTTP2Wire.ErrorCode, _ reason: String) {
        guard phase != .closed else { return }
        writeGoAway(lastStream: state.goAwayLastStreamID(highest: lastStreamID), code, debug: reason)
        close(context)
    }

    /// Closes the connection at once, without flushing what is written: the delegate gives up on a client that does
    /// not read (its unread responses are freed).
    func abort() {
        guard let context, phase != .closed else { return }
        phase = .closed
        state.close()
        cancelTimers()
        inbound = nil
        out = nil
        context.close(promise: nil)
    }

    private func close(_ context: ChannelHandlerContext) {
        guard phase != .closed else { return }
        flush(context)
        phase = .closed
        state.close()
        cancelTimers()
        inbound = nil
        context.close(promise: nil)
    }

    private func flush(_ context: ChannelHandlerContext) {
        guard needsFlush else { return noteOutbound(context) }
        needsFlush = false
        if let out {
            self.out = nil
            context.write(wrapOutboundOut(out), promise: nil)
        }
        context.flush()
        noteOutbound(context)
    }

    /// Tells the delegate when the unread response bytes this connection holds change (`outboundHeld`). A client
    /// that reads costs two comparisons: its queues are empty, the channel writable, and what is written but not
    /// flushed (`out`) small.
    private func noteOutbound(_ context: ChannelHandlerContext) {
        var held = queuedBytes + (out?.readableBytes ?? 0)
        if !context.channel.isWritable {
            held += (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
        }
        if held < Self.outboundFloor { held = 0 }
        guard held != reportedOutbound, phase != .closed else { return }
        reportedOutbound = held
        delegate.outboundHeld(bytes: held)
    }

    private func closeIfDone(_ context: ChannelHandlerContext) {
        if phase != .closed && state.isDone(openStreams: streams.count) { close(context) }
    }
}
