import HangarRuntime
import HangarTransport
import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import Testing

@_spi(Benchmarks) @testable import HangarGRPC

/// The timeouts a slow or stalled client cannot defeat on the gRPC connection: the preface, a header block, an
/// unfinished request, and the exemption of streams idle by design. Time is the EmbeddedEventLoop's.
@Suite("HTTP/2 connection timeouts")
struct HTTP2TimeoutTests {
    typealias RawClient = HTTP2ServerConnectionTests.RawClient
    let connectionTests = HTTP2ServerConnectionTests()
    let streamingTests = GRPCStreamingTests()

    var settings: HTTP2ServerConnection.Settings {
        HTTP2ServerConnection.Settings(ConnectionTimeouts(header: .seconds(10), progress: .seconds(10), idle: nil))
    }

    /// What the server wrote, without WINDOW_UPDATEs (a stream's window is granted at its first DATA).
    func answers(_ client: RawClient) throws -> [HTTP2ServerConnectionTests.RawFrame] {
        try client.frames().filter { $0.type != HTTP2Wire.FrameType.windowUpdate }
    }

    func advance(_ client: RawClient, seconds: Int64) {
        client.channel.embeddedEventLoop.advanceTime(by: .seconds(seconds))
    }

    /// The header block of a HEADERS frame the server wrote, decoded.
    func decode(_ frame: HTTP2ServerConnectionTests.RawFrame) throws -> HPACKHeaders {
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        var bytes = ByteBuffer(bytes: frame.payload)
        return try decoder.decodeHeaders(from: &bytes)
    }

    /// DATA carrying the first `sent` bytes of a gRPC message that declares `declared` bytes.
    func partialMessage(_ client: RawClient, stream: UInt32, declared: UInt32, sent: Int) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(UInt8(0))
        payload.writeInteger(declared)
        payload.writeRepeatingByte(0x0A, count: sent)
        return client.frame(HTTP2Wire.FrameType.data, stream: stream, Array(payload.readableBytesView))
    }

    @Test("a unary request that stops half-way is ended with DEADLINE_EXCEEDED once it makes no progress for the timeout")
    func stalledUnary() throws {
        let client = try connectionTests.raw(settings: settings)
        let block = try client.headerBlock(connectionTests.echoPath())
        try client.send(
            client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1, block),
            partialMessage(client, stream: 1, declared: 5000, sent: 10))
        advance(client, seconds: 6)
        #expect(try client.frames().contains { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.stream == 1 })
        // Progress (1 KiB, `--request-progress-bytes`) resets the clock: 6 + 6 s in all, but never 10 s without it.
        try client.send(client.frame(HTTP2Wire.FrameType.data, stream: 1, [UInt8](repeating: 0x0A, count: 1100)))
        advance(client, seconds: 6)
        #expect(try client.frames().isEmpty)
        // Checked every 2.5 s (a quarter of the timeout): ended by 10 + 2.5 s after the last byte.
        advance(client, seconds: 6)
        let ended = try client.frames()
        try #require(ended.map(\.type) == [HTTP2Wire.FrameType.headers, HTTP2Wire.FrameType.rstStream])
        let trailers = try decode(ended[0])
        #expect(trailers.first(name: "grpc-status") == "4")
        #expect(trailers.first(name: "grpc-message")?.contains("no progress for 10 s") == true)
        #expect(ended[1].errorCode == HTTP2Wire.ErrorCode.noError.rawValue)

        // The connection serves on.
        var message = try connectionTests.handlerTests.echo("after")
        try client.send(
            client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 3, block),
            client.frame(
                HTTP2Wire.FrameType.data, flags: HTTP2Wire.Flag.endStream, stream: 3,
                message.readBytes(length: message.readableBytes)!))
        let answered = try client.frames()
        #expect(answered.count == 3)
        #expect(try decode(answered[2]).first(name: "grpc-status") == "0")
    }

    @Test("a request trickling fewer bytes than progressBytes is ended as if it had stopped")
    func trickle() throws {
        let client = try connectionTests.raw(settings: settings)
        try client.send(
            client.frame(
                HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1,
                try client.headerBlock(connectionTests.echoPath())),
            partialMessage(client, stream: 1, declared: 60_000, sent: 10))
        _ = try client.frames()
        // A byte every 3 s: never 10 s without a byte, but 1 KiB is never reached.
        var ended: [HTTP2ServerConnectionTests.RawFrame] = []
        for _ in 0..<5 where ended.isEmpty {
            advance(client, seconds: 3)
            ended = try client.frames()
            if ended.isEmpty { try client.send(client.frame(HTTP2Wire.FrameType.data, stream: 1, [0x0A])) }
        }
        try #require(ended.map(\.type) == [HTTP2Wire.FrameType.headers, HTTP2Wire.FrameType.rstStream])
        #expect(try decode(ended[0]).first(name: "grpc-status") == "4")
    }

    @Test("a unary request whose message is complete but never ends is timed out too")
    func unendedUnary() throws {
        let client = try connectionTests.raw(settings: settings)
        var message = try connectionTests.handlerTests.echo("no end")
        try client.send(
            client.frame(
                HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1,
                try client.headerBlock(connectionTests.echoPath())),
            client.frame(HTTP2Wire.FrameType.data, stream: 1, message.readBytes(length: message.readableBytes)!))
        advance(client, seconds: 9)
        #expect(try answers(client).isEmpty)
        advance(client, seconds: 3)
        let ended = try client.frames()
        #expect(try ended.first.map(decode)?.first(name: "grpc-status") == "4")
    }

    @Test("a connection that does not send its preface within the header timeout is closed")
    func noPreface() throws {
        let client = try connectionTests.raw(settings: settings, preface: false)
        try client.channel.writeInbound(ByteBuffer(bytes: HTTP2Wire.preface.prefix(10)))
        advance(client, seconds: 9)
        #expect(client.channel.isActive)
        advance(client, seconds: 3)
        #expect(!client.channel.isActive)
    }

    @Test("a header block left unfinished is ENHANCE_YOUR_CALM after the header timeout")
    func unfinishedHeaderBlock() throws {
        let client = try connectionTests.raw(settings: settings)
        let block = try client.headerBlock(connectionTests.echoPath())
        try client.send(client.frame(HTTP2Wire.FrameType.headers, stream: 1, Array(block.prefix(3))))
        advance(client, seconds: 9)
        #expect(try client.frames().isEmpty)
        advance(client, seconds: 3)
        #expect(try client.goAway()?.errorCode == HTTP2Wire.ErrorCode.enhanceYourCalm.rawValue)
        #expect(!client.channel.isActive)
    }

    @Test("a bidirectional stream idle between messages is never timed out; stopped inside a message, it is")
    func streamingExemption() throws {
        let gate = streamingTests.gate()
        let client = try RawClient(
            EmbeddedChannel(handler: streamingTests.handler(gate).makeConnection(settings: settings)))
        var message = try connectionTests.handlerTests.echo("hello")
        try client.send(
            client.frame(
                HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1,
                try client.headerBlock(streamingTests.headers("Chat"))),
            client.frame(HTTP2Wire.FrameType.data, stream: 1, message.readBytes(length: message.readableBytes)!))
        #expect(try client.frames().contains { $0.type == HTTP2Wire.FrameType.data })
        for _ in 0..<6 { advance(client, seconds: 10) }
        #expect(try client.frames().isEmpty, "an idle subscription-like stream must stay open")

        try client.send(partialMessage(client, stream: 1, declared: 500, sent: 3))
        advance(client, seconds: 12)
        let ended = try client.frames()
        let trailers = try ended.first { $0.type == HTTP2Wire.FrameType.headers }.map(decode)
        #expect(trailers?.first(name: "grpc-status") == "4")
        #expect(ended.last?.type == HTTP2Wire.FrameType.rstStream)
    }

    @Test("with the timeouts off, a stalled request waits")
    func timeoutsOff() throws {
        let client = try connectionTests.raw(settings: HTTP2ServerConnection.Settings(.none))
        try client.send(
            client.frame(
                HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1,
                try client.headerBlock(connectionTests.echoPath())),
            partialMessage(client, stream: 1, declared: 1000, sent: 10))
        advance(client, seconds: 3600)
        #expect(try answers(client).isEmpty)
        #expect(client.channel.isActive)
    }
}

/// The tenant's buffered bytes on the gRPC connection: partial messages counted from their first byte, refused past
/// `maxBufferedBytes`, given back when the call ends.
@Suite("gRPC buffered bytes")
struct GRPCBufferTests {
    typealias RawClient = HTTP2ServerConnectionTests.RawClient
    let connectionTests = HTTP2ServerConnectionTests()

    func gate(maxBufferedBytes: Int) -> Gate {
        Gate(
            registry: TenantRegistry(
                configuration: NodeConfiguration(
                    tenants: [
                        TenantSpec(
                            namespace: "team-a", apps: [AppSpec(appId: "echo")],
                            quotas: Quotas(maxBufferedBytes: maxBufferedBytes))
                    ],
                    components: []),
                maxRequestBytes: 1 << 20))
    }

    @Test("partial messages past the tenant's maxBufferedBytes are refused with RESOURCE_EXHAUSTED; ended calls give their bytes back")
    func tenantShare() throws {
        let gate = gate(maxBufferedBytes: 80_000)
        let client = try connectionTests.raw(settings: HTTP2ServerConnection.Settings(.none), gate: gate)
        let block = try client.headerBlock(connectionTests.echoPath())
        let account = try #require(gate.registry.tenantAccount("team-a")?.buffers)
        // 30,000 bytes of a message declared 40,000 long, in frames of at most 16 KiB.
        func partial(_ stream: UInt32) throws {
            var payload = ByteBuffer()
            payload.writeInteger(UInt8(0))
            payload.writeInteger(UInt32(40_000))
            payload.writeRepeatingByte(0x0A, count: 30_000)
            try client.send(client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, block))
            while payload.readableBytes > 0 {
                let chunk = payload.readBytes(length: min(16_384, payload.readableBytes))!
                try client.send(client.frame(HTTP2Wire.FrameType.data, stream: stream, chunk))
            }
        }
        try partial(1)
        // The stream went on past its first DATA unrefused: the rest of its 1 MiB window, at once (it started with
        // 64 KiB).
        let opened = try client.frames().filter { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.stream == 1 }
        #expect(opened.map(\.payload) == [[0, 0x0F, 0, 0]])
        let one = account.usedBytes
        #expect(one >= 30_005 && one <= 65_536, "one partial message: \(one) bytes counted")
        try partial(3)
        let two = account.usedBytes
        #expect(two >= 60_010 && two <= 80_000)
        #expect(try client.frames().filter { $0.type == HTTP2Wire.FrameType.headers }.isEmpty)
        try partial(5)
        let refused = try client.frames()
        let trailers = try #require(refused.first { $0.type == HTTP2Wire.FrameType.headers && $0.stream == 5 })
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        var bytes = ByteBuffer(bytes: trailers.payload)
        let headers = try decoder.decodeHeaders(from: &bytes)
        #expect(headers.first(name: "grpc-status") == "8")
        #expect(headers.first(name: "grpc-message")?.contains("maxBufferedBytes") == true)
        #expect(
            !refused.contains { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.stream == 5 },
            "a refused stream keeps its 64 KiB window: the client stops sending at it")
        #expect(account.usedBytes == two, "the refused call holds nothing")
        try client.send(client.frame(HTTP2Wire.FrameType.rstStream, stream: 1, [0, 0, 0, 8]))
        #expect(account.usedBytes == two - one)
        try client.channel.close().wait()
        #expect(account.usedBytes == 0, "a closed connection gives everything back")
        #expect(gate.registry.buffers.usedBytes == 0)
    }

    /// A raw client whose SETTINGS give every stream a receive window of `initialWindow` bytes.
    func client(_ gate: Gate, initialWindow: UInt32) throws -> RawClient {
        let handler = GRPCConnectionHandler(
            service: connectionTests.handlerTests.makeService(), identity: .app(connectionTests.handlerTests.app),
            gate: gate, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try RawClient(
            EmbeddedChannel(handler: handler.makeConnection(settings: HTTP2ServerConnection.Settings(.none))),
            initialWindow: initialWindow)
    }

    /// Unary echo calls answering `size` bytes each, on streams `first`, `first + 2`, ...
    func echoes(_ client: RawClient, from first: UInt32, count: Int, size: Int = 60_000) throws {
        let block = try client.headerBlock(connectionTests.echoPath())
        var message = try connectionTests.handlerTests.echo(String(repeating: "x", count: size))
        let bytes = message.readBytes(length: message.readableBytes)!
        for index in 0..<count {
            let stream = first + UInt32(2 * index)
            // One read: HEADERS and DATA frames of at most 16 KiB, the last one ending the stream. The request is
            // answered in the read that brought it, so it holds no request bytes.
            var call = client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, block)
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + 16_384, bytes.count)
                var frame = client.frame(
                    HTTP2Wire.FrameType.data, flags: end == bytes.count ? HTTP2Wire.Flag.endStream : 0,
                    stream: stream, Array(bytes[offset..<end]))
                call.writeBuffer(&frame)
                offset = end
            }
            try client.send(call)
        }
    }

    @Test("answers the client does not read count against its tenant's share, and are given back once it reads")
    func unreadAnswersCounted() throws {
        let gate = gate(maxBufferedBytes: 10 << 20)
        let account = try #require(gate.registry.tenantAccount("team-a")?.buffers)
        // A zero stream window: every answer waits in its stream's queue.
        let client = try client(gate, initialWindow: 0)
        try echoes(client, from: 1, count: 3)
        #expect(account.usedBytes == 0, "180 kB unread: under the 256 KiB a reading client may have in flight")
        try echoes(client, from: 7, count: 7)
        let held = account.usedBytes
        #expect(held >= 600_000 && held < 620_000, "10 answers of 60 kB unread: \(held) bytes counted")
        #expect(gate.registry.buffers.usedBytes == held)
        // The client opens its windows and reads: the answers go out and their bytes are given back.
        var open = ByteBuffer()
        open.writeHTTP2FrameHeader(length: 6, type: HTTP2Wire.FrameType.settings, flags: 0, stream: 0)
        open.writeInteger(HTTP2Wire.Setting.initialWindowSize)
        open.writeInteger(UInt32(1 << 20))
        open.writeHTTP2FrameHeader(length: 4, type: HTTP2Wire.FrameType.windowUpdate, flags: 0, stream: 0)
        open.writeInteger(UInt32(4 << 20))
        try client.send(open)
        let frames = try client.frames()
        #expect(frames.filter { $0.type == HTTP2Wire.FrameType.data }.reduce(0) { $0 + $1.payload.count } >= 600_000)
        #expect(account.usedBytes == 0)
        #expect(gate.registry.buffers.usedBytes == 0)
        #expect(client.channel.isActive)
    }

    @Test("a connection whose unread answers take its tenant past maxBufferedBytes is closed, and they are freed")
    func unreadAnswersPastShare() throws {
        let gate = gate(maxBufferedBytes: 500_000)
        let account = try #require(gate.registry.tenantAccount("team-a")?.buffers)
        let client = try client(gate, initialWindow: 0)
        // Requests of one DATA frame each, answered in the read that brought them: they hold nothing themselves.
        try echoes(client, from: 1, count: 31, size: 16_000)
        #expect(client.channel.isActive, "31 answers of 16 kB unread: within the share")
        #expect(account.usedBytes > 490_000)
        try echoes(client, from: 63, count: 1, size: 16_000)
        #expect(!client.channel.isActive, "the 32nd answer took the tenant past its 500,000 bytes")
        #expect(account.usedBytes == 0)
        #expect(gate.registry.buffers.usedBytes == 0)
    }
}
