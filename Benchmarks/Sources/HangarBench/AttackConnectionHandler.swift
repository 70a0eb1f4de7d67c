import NIOCore
import NIOHPACK
import NIOHTTP2

/// One attacking connection (`AttackPlan`), behind swift-nio-http2's client `NIOHTTP2Handler`, which keeps to
/// hangard's flow-control windows and concurrent-stream limit: opens its share of the plan's SaveState streams,
/// sends all of each request but its last bytes, trickles one more byte per stream every `trickleInterval`, and
/// counts in the attacker's `AttackTally` what hangard accepted and how it ended each stream. Every method runs on
/// the channel's event loop, which the attacker's other connections share.
final class AttackConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// What the handler reports to its attacker.
    protocol Owner: AnyObject {
        var tally: AttackTally { get set }
        /// True once the attack is over: nothing reopens, and closing the connection is the attacker's doing.
        var isStopping: Bool { get }
        func connectionClosed(_ handler: AttackConnectionHandler)
    }

    private struct OpenStream {
        /// Request body bytes written (queued), and of those the ones whose write completed.
        var queued = 0
        var accepted = 0
        var pendingWrites = 0
        /// Set once hangard ended the stream (trailers or reset) and the stream's bytes left `bytesHeld`.
        var ended = false
    }

    static let headers: HPACKHeaders = [
        ":method": "POST", ":scheme": "http", ":path": BenchRequests.saveStatePath, ":authority": "localhost",
        "content-type": "application/grpc", "te": "trailers",
    ]

    private let plan: AttackPlan
    private let streamCount: Int
    private unowned let owner: any Owner
    /// `chunkBytes` zero bytes: every DATA write is this buffer or a slice of it, so the attacker holds no copy.
    private let chunk: ByteBuffer
    private var context: ChannelHandlerContext?
    private var streams: [HTTP2StreamID: OpenStream] = [:]
    private var nextStreamID: Int32 = 1
    private var trickle: Scheduled<Void>?
    private var isClosed = false

    init(plan: AttackPlan, streams: Int, owner: any Owner) {
        self.plan = plan
        self.streamCount = streams
        self.owner = owner
        self.chunk = ByteBuffer(repeating: 0, count: plan.chunkBytes)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if context.channel.isActive { begin(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        begin(context)
        context.fireChannelActive()
    }

    private func begin(_ context: ChannelHandlerContext) {
        guard trickle == nil else { return }
        owner.tally.connectionsOpened += 1
        for _ in 0..<streamCount { openStream(context) }
        context.flush()
        scheduleTrickle(context.eventLoop)
    }

    private func scheduleTrickle(_ eventLoop: any EventLoop) {
        guard !isClosed else { return }
        let interval = TimeAmount.nanoseconds(Int64(plan.trickleInterval * 1_000_000_000))
        trickle = eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.trickleOnce()
            self.scheduleTrickle(eventLoop)
        }
    }

    // MARK: Sending

    private func openStream(_ context: ChannelHandlerContext) {
        guard !owner.isStopping, nextStreamID < Int32.max - 2 else { return }
        let id = HTTP2StreamID(nextStreamID)
        nextStreamID += 2
        streams[id] = OpenStream()
        owner.tally.streamsOpen += 1
        let headersWritten = context.eventLoop.makePromise(of: Void.self)
        headersWritten.futureResult.assumeIsolated().whenSuccess { self.owner.tally.streamsOpened += 1 }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .headers(.init(headers: Self.headers)))),
            promise: headersWritten)
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt8(0))
        prefix.writeInteger(UInt32(plan.messageBytes))
        write(prefix, on: id, context, isTrickle: false)
        var remaining = plan.initialBytes - 5
        while remaining > 0 {
            let size = min(remaining, plan.chunkBytes)
            write(chunk.getSlice(at: 0, length: size)!, on: id, context, isTrickle: false)
            remaining -= size
        }
    }

    private func write(_ bytes: ByteBuffer, on id: HTTP2StreamID, _ context: ChannelHandlerContext, isTrickle: Bool) {
        let size = bytes.readableBytes
        streams[id]?.queued += size
        streams[id]?.pendingWrites += 1
        if isTrickle { owner.tally.trickles += 1 }
        let written = context.eventLoop.makePromise(of: Void.self)
        written.futureResult.assumeIsolated().whenComplete { result in
            self.streams[id]?.pendingWrites -= 1
            guard case .success = result else { return }
            self.owner.tally.bytesAccepted += size
            if isTrickle { self.owner.tally.tricklesAccepted += 1 }
            if let stream = self.streams[id], !stream.ended {
                self.streams[id]?.accepted += size
                self.owner.tally.bytesHeld += size
            }
        }
        context.write(
            wrapOutboundOut(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(bytes))))),
            promise: written)
    }

    /// `trickleBytes` more (one at least) on every stream whose earlier bytes all went out and that has more than its
    /// last byte left.
    private func trickleOnce() {
        guard let context, !owner.isStopping, !isClosed else { return }
        var wrote = false
        for (id, stream) in streams
        where !stream.ended && stream.pendingWrites == 0 && stream.queued < 5 + plan.messageBytes - 1 {
            let size = max(1, min(plan.trickleBytes, 5 + plan.messageBytes - 1 - stream.queued, chunk.readableBytes))
            write(chunk.getSlice(at: 0, length: size)!, on: id, context, isTrickle: true)
            wrote = true
        }
        if wrote { context.flush() }
    }

    // MARK: Receiving

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers) where headers.endStream:
            let status = headers.headers.first(name: "grpc-status")
            let message = headers.headers.first(name: "grpc-message") ?? ""
            switch status {
            case "8":
                owner.tally.refused += 1
                if owner.tally.firstRefusal == nil { owner.tally.firstRefusal = message }
            case "0":
                owner.tally.completed += 1
            default:
                let key = status.map { "grpc-status \($0)" } ?? "HTTP \(headers.headers.first(name: ":status") ?? "?")"
                owner.tally.otherStatuses[key, default: 0] += 1
                if owner.tally.firstOtherEnd == nil { owner.tally.firstOtherEnd = "\(key): \(message)" }
            }
            end(frame.streamID, context, cancel: true)
        case .rstStream(let code):
            if let stream = streams[frame.streamID], !stream.ended {
                owner.tally.resets["\(code)", default: 0] += 1
                end(frame.streamID, context, cancel: false)
            }
        case .goAway(_, let code, _):
            owner.tally.goAways["\(code)", default: 0] += 1
        default:
            break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let closed = event as? StreamClosedEvent, let stream = streams[closed.streamID] {
            if !stream.ended {
                owner.tally.resets[closed.reason.map { "\($0)" } ?? "closed", default: 0] += 1
                end(closed.streamID, context, cancel: false)
            }
            streams[closed.streamID] = nil
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Hangard ended the stream: its bytes are no longer held; with `cancel`, the rest of the request is dropped
    /// (RST_STREAM CANCEL, as a gRPC client does once it has the status); with `reopen`, a new stream follows.
    private func end(_ id: HTTP2StreamID, _ context: ChannelHandlerContext, cancel: Bool) {
        guard let stream = streams[id], !stream.ended else { return }
        streams[id]?.ended = true
        owner.tally.bytesHeld -= stream.accepted
        owner.tally.streamsOpen -= 1
        if cancel {
            context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
        }
        if plan.reopen && !owner.isStopping {
            let delay = TimeAmount.nanoseconds(Int64(plan.reopenDelay * 1_000_000_000))
            context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
                guard let context = self.context, context.channel.isActive else { return }
                self.openStream(context)
                context.flush()
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOHTTP2Errors.StreamError { return }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        trickle?.cancel()
        for (_, stream) in streams where !stream.ended {
            owner.tally.bytesHeld -= stream.accepted
            owner.tally.streamsOpen -= 1
            if !owner.isStopping { owner.tally.lostWithConnection += 1 }
        }
        streams.removeAll()
        if !owner.isStopping { owner.tally.connectionsClosedByServer += 1 }
        owner.connectionClosed(self)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }
}
