import HangarRuntime
import HangarTransport
import NIOCore
import NIOEmbedded
import Testing

@testable import HangarGRPC

/// Connection management on Hangar's HTTP/2 connection, in raw frames and virtual time: the two-phase GOAWAY of a
/// drain, keepalive PINGs and the idle timeout.
@Suite("HTTP/2 connection management")
struct HTTP2ConnectionManagementTests {
    typealias RawClient = HTTP2ServerConnectionTests.RawClient
    typealias RawFrame = HTTP2ServerConnectionTests.RawFrame
    let connectionTests = HTTP2ServerConnectionTests()

    func settings(
        keepalive: TimeAmount? = nil, keepaliveTimeout: TimeAmount = .seconds(20), idle: TimeAmount? = nil
    ) -> HTTP2ServerConnection.Settings {
        var settings = HTTP2ServerConnection.Settings()
        settings.keepaliveInterval = keepalive
        settings.keepaliveTimeout = keepaliveTimeout
        settings.maxIdleTime = idle
        return settings
    }

    func lastStreamID(_ goAway: RawFrame) -> UInt32 {
        UInt32(goAway.payload[0]) << 24 | UInt32(goAway.payload[1]) << 16 | UInt32(goAway.payload[2]) << 8
            | UInt32(goAway.payload[3])
    }

    func pingPayload(_ value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64($0))) }
    }

    func open(_ client: RawClient, _ stream: UInt32, method: String) throws {
        let block = try client.headerBlock(
            connectionTests.handlerTests.requestHeaders("/hangar.test.v1.Echo/\(method)"))
        var message = try connectionTests.handlerTests.echo("x")
        try client.send(
            client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, block),
            client.frame(
                HTTP2Wire.FrameType.data, flags: HTTP2Wire.Flag.endStream, stream: stream,
                message.readBytes(length: message.readableBytes)!))
    }

    func advance(_ client: RawClient, by amount: TimeAmount) {
        client.channel.embeddedEventLoop.advanceTime(by: amount)
    }

    /// Closes the connection when it first flushes: a peer gone by the time the server writes its preface.
    final class CloseOnFlush: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        func flush(context: ChannelHandlerContext) { context.close(promise: nil) }
    }

    @Test("a connection whose peer is gone when the preface is written arms no timer and is freed at once")
    func peerGoneAtStart() throws {
        weak var released: HTTP2ServerConnection?
        let channel = EmbeddedChannel()
        try {
            let connection = HTTP2ServerConnection(
                delegate: HTTP2ServerConnectionFlowTests.Script(),
                settings: settings(keepalive: .hours(2), idle: .minutes(5)))
            released = connection
            try channel.pipeline.syncOperations.addHandlers([CloseOnFlush(), connection])
        }()
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
        #expect(!channel.isActive)
        channel.embeddedEventLoop.run()  // the pipeline lets its handlers go (tasks due now, not the timers)
        // A keepalive (2 hours) or idle check (5 minutes) armed after the close would hold the connection, its
        // buffers and its delegate until it fired: 6 KB for every client that connects and leaves at once.
        #expect(released == nil, "still referenced: a timer was armed after the connection closed")
    }

    @Test("a drain sends GOAWAY(2^31-1) and a PING; after the ACK a final GOAWAY names the last stream served")
    func twoPhaseDrain() throws {
        let client = try connectionTests.raw(settings: settings())
        try open(client, 1, method: "Never")
        client.channel.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent())
        var frames = try client.frames()
        let first = try #require(frames.first { $0.type == HTTP2Wire.FrameType.goAway })
        #expect(lastStreamID(first) == UInt32(Int32.max))
        #expect(first.errorCode == HTTP2Wire.ErrorCode.noError.rawValue)
        let ping = try #require(frames.first { $0.type == HTTP2Wire.FrameType.ping })
        #expect(ping.flags == 0)

        // Opened before the client read the first GOAWAY: still served.
        try open(client, 3, method: "Echo")
        frames = try client.frames()
        #expect(
            frames.contains {
                $0.stream == 3 && $0.type == HTTP2Wire.FrameType.headers && $0.flags & HTTP2Wire.Flag.endStream != 0
            })

        try client.send(client.frame(HTTP2Wire.FrameType.ping, flags: HTTP2Wire.Flag.ack, stream: 0, ping.payload))
        let final = try #require(try client.goAway())
        #expect(lastStreamID(final) == 3)
        #expect(client.channel.isActive, "stream 1 is still being served")

        // After the final GOAWAY: refused, never served.
        try open(client, 5, method: "Echo")
        frames = try client.frames()
        #expect(frames.map(\.type) == [HTTP2Wire.FrameType.rstStream])
        #expect(frames.first?.errorCode == HTTP2Wire.ErrorCode.refusedStream.rawValue)

        try client.send(client.frame(HTTP2Wire.FrameType.rstStream, stream: 1, [0, 0, 0, 8]))
        #expect(!client.channel.isActive, "the last stream is done: the connection closes")
    }

    @Test("a drain whose PING is never acknowledged sends the final GOAWAY after its bound and closes")
    func drainBound() throws {
        let client = try connectionTests.raw(settings: settings())
        client.channel.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent())
        _ = try client.frames()
        #expect(client.channel.isActive)
        advance(client, by: HTTP2ServerConnection.Settings().drainPingTimeout)
        let final = try #require(try client.goAway())
        #expect(lastStreamID(final) == 0)
        #expect(!client.channel.isActive)
    }

    @Test("keepalive: a PING after the interval without reads; one not acknowledged in time closes the connection")
    func keepalive() throws {
        let client = try connectionTests.raw(settings: settings(keepalive: .seconds(10), keepaliveTimeout: .seconds(2)))
        advance(client, by: .seconds(10))
        var ping = try #require(try client.frames().first { $0.type == HTTP2Wire.FrameType.ping })
        #expect(ping.payload == pingPayload(HTTP2ConnectionState.keepalivePing))
        try client.send(client.frame(HTTP2Wire.FrameType.ping, flags: HTTP2Wire.Flag.ack, stream: 0, ping.payload))
        advance(client, by: .seconds(5))
        #expect(client.channel.isActive)

        // Reads postpone the PING.
        advance(client, by: .seconds(4))
        try open(client, 1, method: "Echo")
        _ = try client.frames()
        advance(client, by: .seconds(6))
        #expect(try client.frames().isEmpty)

        advance(client, by: .seconds(4))
        ping = try #require(try client.frames().first { $0.type == HTTP2Wire.FrameType.ping })
        #expect(client.channel.isActive)
        advance(client, by: .seconds(2))
        #expect(try client.goAway() != nil)
        #expect(!client.channel.isActive)
    }

    @Test("a connection with no stream for the idle time is drained and closed; an open stream keeps it")
    func idle() throws {
        let client = try connectionTests.raw(settings: settings(idle: .seconds(60)))
        try open(client, 1, method: "Never")
        _ = try client.frames()
        advance(client, by: .seconds(120))
        #expect(try client.goAway() == nil, "a stream is open")
        try client.send(client.frame(HTTP2Wire.FrameType.rstStream, stream: 1, [0, 0, 0, 8]))
        advance(client, by: .seconds(59))
        #expect(try client.goAway() == nil)
        advance(client, by: .seconds(1))
        let frames = try client.frames()
        let first = try #require(frames.first { $0.type == HTTP2Wire.FrameType.goAway })
        #expect(lastStreamID(first) == UInt32(Int32.max))
        let ping = try #require(frames.first { $0.type == HTTP2Wire.FrameType.ping })
        try client.send(client.frame(HTTP2Wire.FrameType.ping, flags: HTTP2Wire.Flag.ack, stream: 0, ping.payload))
        #expect(try client.goAway().map(lastStreamID) == 1)
        #expect(!client.channel.isActive)
    }
}
