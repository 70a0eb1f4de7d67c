import Foundation
import HangarRuntime
import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf
import Testing

@_spi(Benchmarks) @testable import HangarGRPC
import HangarSync

/// Streaming methods through the real connection: swift-nio-http2's client (or raw bytes) against Hangar's server on
/// EmbeddedChannels.
@Suite("gRPC streaming calls")
struct GRPCStreamingTests {
    let handlerTests = GRPCConnectionHandlerTests()

    /// What the test methods saw, from whichever call.
    final class Events: Sendable {
        let cancelled = Locked<[String]>([])
    }

    let events = Events()

    /// Count: one request (how many), then that many responses, sent as fast as the stream takes them.
    /// Chat: echoes every message, finishes when the client does. Hold: takes no message and never answers.
    /// Drip: one response, then nothing.
    func makeService() -> GRPCService {
        var service = handlerTests.makeService()
        let events = events
        service.serverStreaming("/hangar.test.v1.Stream/Count", Google_Protobuf_UInt32Value.self) { request, call in
            var next: UInt32 = 0
            func pump() {
                while next < request.value {
                    var message = Google_Protobuf_UInt32Value()
                    message.value = next
                    next += 1
                    guard (try? call.send(message)) == true else { return }
                }
                call.finish()
            }
            call.onWritable = pump
            call.onCancel = { events.cancelled.withLock { $0.append("Count") } }
            pump()
        }
        service.bidirectionalStreaming("/hangar.test.v1.Stream/Chat") { call in
            call.onMessage = { [unowned call] message in
                var framed = ByteBuffer()
                framed.writeInteger(UInt8(0))
                framed.writeInteger(UInt32(message.readableBytes))
                framed.writeImmutableBuffer(message)
                call.send(framed: framed)
            }
            call.onEnd = { [unowned call] in call.finish() }
            call.onCancel = { events.cancelled.withLock { $0.append("Chat") } }
        }
        service.bidirectionalStreaming("/hangar.test.v1.Stream/Hold") { call in
            call.pause()
            call.onCancel = { events.cancelled.withLock { $0.append("Hold") } }
        }
        service.bidirectionalStreaming("/hangar.test.v1.Stream/Drip") { call in
            var message = Google_Protobuf_UInt32Value()
            message.value = 7
            _ = try? call.send(message)
            call.onCancel = { events.cancelled.withLock { $0.append("Drip") } }
        }
        return service
    }

    func gate(_ quotas: Quotas = Quotas(), maxRequestBytes: Int = 64 * 1024) -> Gate {
        Gate(
            registry: TenantRegistry(
                configuration: NodeConfiguration(
                    tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "echo")], quotas: quotas)],
                    components: []),
                maxRequestBytes: maxRequestBytes))
    }

    func handler(_ gate: Gate) -> GRPCConnectionHandler {
        GRPCConnectionHandler(
            service: makeService(), identity: .app(handlerTests.app), gate: gate,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func pair(_ gate: Gate) throws -> GRPCConnectionHandlerTests.Pair {
        try GRPCConnectionHandlerTests.Pair(
            server: EmbeddedChannel(handler: handler(gate).makeConnection()),
            clientSettings: [HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20)])
    }

    func headers(_ method: String, timeout: String? = nil) -> HPACKHeaders {
        handlerTests.requestHeaders(
            "/hangar.test.v1.Stream/\(method)", extra: timeout.map { [("grpc-timeout", $0)] } ?? [])
    }

    func count(_ value: UInt32) throws -> ByteBuffer {
        var request = Google_Protobuf_UInt32Value()
        request.value = value
        return try GRPCService.frame(request)
    }

    /// The response messages of `stream` in `frames`, deframed.
    func messages(_ frames: [HTTP2Frame], stream: HTTP2StreamID) throws -> [ByteBuffer] {
        var deframer = GRPCMessageDeframer(maxMessageBytes: 1 << 20)
        var messages: [ByteBuffer] = []
        for frame in frames where frame.streamID == stream {
            if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data {
                messages += try deframer.append(bytes)
            }
        }
        return messages
    }

    func dataBytes(_ frames: ArraySlice<HTTP2Frame>) -> Int {
        frames.reduce(0) { total, frame in
            if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data {
                total + bytes.readableBytes
            } else {
                total
            }
        }
    }

    func values(_ messages: [ByteBuffer]) throws -> [UInt32] {
        try messages.map { bytes in
            try bytes.withUnsafeReadableBytes { try Google_Protobuf_UInt32Value(serializedBytes: $0.bytes) }.value
        }
    }

    func trailers(_ frames: [HTTP2Frame], stream: HTTP2StreamID) -> HPACKHeaders? {
        handlerTests.trailers(frames.filter { $0.streamID == stream })
    }

    @Test("a server-streaming call sends many messages in order, past the stream's write buffer, then OK")
    func serverStreaming() throws {
        let pair = try pair(gate())
        try handlerTests.send(pair, 1, headers: headers("Count"), message: count(20_000))
        var frames = try handlerTests.frames(pair)
        // The client reads: it opens its windows by what it received, until the trailers come.
        var opened = 0
        for _ in 0..<100 where trailers(frames, stream: 1) == nil {
            let bytes = dataBytes(frames[...]) - opened
            opened += bytes
            guard bytes > 0 else { break }
            pair.write(HTTP2Frame(streamID: .rootStream, payload: .windowUpdate(windowSizeIncrement: bytes)))
            pair.write(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: bytes)))
            frames += try handlerTests.frames(pair)
        }
        let received = try values(messages(frames, stream: 1))
        #expect(received.count == 20_000)
        #expect(received.elementsEqual(0..<20_000), "in order")
        #expect(trailers(frames, stream: 1)?.first(name: "grpc-status") == "0")
        #expect(trailers(frames, stream: 1)?.first(name: ":status") == nil, "trailers carry no pseudo-header")
        #expect(events.cancelled.withLock { $0 }.isEmpty)
    }

    @Test("a bidirectional call answers each message as it arrives and finishes when the client does")
    func bidirectional() throws {
        let pair = try pair(gate())
        pair.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers("Chat")))))
        for value: UInt32 in [3, 1, 4] {
            pair.write(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(try count(value))))))
            let frames = try handlerTests.frames(pair)
            #expect(try values(messages(frames, stream: 1)) == [value])
            #expect(trailers(frames, stream: 1) == nil)
        }
        pair.write(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))))
        let frames = try handlerTests.frames(pair)
        #expect(trailers(frames, stream: 1)?.first(name: "grpc-status") == "0")
    }

    @Test("a client's RST_STREAM cancels the call and frees its maxStreams slot")
    func cancellation() throws {
        let gate = gate(Quotas(maxStreams: 1))
        let pair = try pair(gate)
        pair.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers("Hold")))))
        #expect(try handlerTests.frames(pair).isEmpty)
        let account = try #require(gate.registry.account(handlerTests.app))
        #expect(account.openStreams == 1)
        pair.write(HTTP2Frame(streamID: 1, payload: .rstStream(.cancel)))
        _ = try handlerTests.frames(pair)
        #expect(events.cancelled.withLock { $0 } == ["Hold"])
        #expect(account.openStreams == 0)
        pair.write(HTTP2Frame(streamID: 3, payload: .headers(.init(headers: headers("Hold")))))
        #expect(try handlerTests.frames(pair).isEmpty, "the slot is free again")
    }

    @Test("grpc-timeout ends a streaming call with DEADLINE_EXCEEDED trailers after its messages and cancels it")
    func deadline() throws {
        let pair = try pair(gate())
        pair.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: headers("Drip", timeout: "100m")))))
        var frames = try handlerTests.frames(pair)
        #expect(try values(messages(frames, stream: 1)) == [7])
        pair.server.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        frames = try handlerTests.frames(pair)
        let ended = try #require(trailers(frames, stream: 1))
        #expect(ended.first(name: "grpc-status") == String(RPCCode.deadlineExceeded.rawValue))
        #expect(ended.first(name: ":status") == nil)
        #expect(events.cancelled.withLock { $0 } == ["Drip"])
    }

    @Test("streams count against maxStreams, not maxConcurrentRequests; over it is RESOURCE_EXHAUSTED")
    func streamQuota() throws {
        let gate = gate(Quotas(maxConcurrentRequests: 1, maxStreams: 2))
        let pair = try pair(gate)
        for id: HTTP2StreamID in [1, 3] {
            pair.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers("Hold")))))
        }
        #expect(try handlerTests.frames(pair).isEmpty)
        // The one request slot is still free.
        pair.write(
            HTTP2Frame(
                streamID: 5,
                payload: .headers(.init(headers: handlerTests.requestHeaders("/hangar.test.v1.Echo/Never")))))
        #expect(try handlerTests.frames(pair).isEmpty)
        pair.write(HTTP2Frame(streamID: 7, payload: .headers(.init(headers: headers("Hold")))))
        let refused = try #require(trailers(try handlerTests.frames(pair), stream: 7))
        #expect(refused.first(name: "grpc-status") == String(RPCCode.resourceExhausted.rawValue))
        #expect(refused.first(name: "grpc-message")?.contains("maxStreams") == true)
    }

    // MARK: Raw bytes

    func raw(_ gate: Gate, initialWindow: UInt32) throws -> HTTP2ServerConnectionTests.RawClient {
        try HTTP2ServerConnectionTests.RawClient(
            EmbeddedChannel(handler: handler(gate).makeConnection()), initialWindow: initialWindow)
    }

    func request(
        _ client: HTTP2ServerConnectionTests.RawClient, _ stream: UInt32, _ headers: HPACKHeaders,
        _ message: ByteBuffer?,
        end: Bool = true
    ) throws {
        let block = try client.headerBlock(headers)
        try client.send(
            client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, block))
        if var message {
            try client.send(
                client.frame(
                    HTTP2Wire.FrameType.data, flags: end ? HTTP2Wire.Flag.endStream : 0, stream: stream,
                    message.readBytes(length: message.readableBytes)!))
        }
    }

    @Test("a client that does not read one stream still gets a unary answer on another stream of the connection")
    func slowConsumer() throws {
        let client = try raw(gate(), initialWindow: 200)
        try request(client, 1, headers("Count"), count(100_000))
        var frames = try client.frames()
        #expect(
            frames.filter { $0.stream == 1 && $0.type == HTTP2Wire.FrameType.data }.reduce(0) { $0 + $1.payload.count }
                == 200)
        try request(client, 3, handlerTests.requestHeaders("/hangar.test.v1.Echo/Echo"), handlerTests.echo("hi"))
        frames = try client.frames()
        let three = frames.filter { $0.stream == 3 }
        #expect(
            three.map(\.type) == [HTTP2Wire.FrameType.headers, HTTP2Wire.FrameType.data, HTTP2Wire.FrameType.headers])
        #expect(three.last.map { $0.flags & HTTP2Wire.Flag.endStream != 0 } == true)
        #expect(!frames.contains { $0.stream == 1 }, "stream 1 waits for its window")
    }

    @Test("request bytes a streaming method has not taken are not credited back to the client")
    func inboundBackpressure() throws {
        let client = try raw(gate(), initialWindow: 65_535)
        let frame = [UInt8](repeating: 0, count: 16_000)
        var message = ByteBuffer()
        message.writeInteger(UInt8(0))
        message.writeInteger(UInt32(frame.count - 5))
        message.writeBytes(frame.dropFirst(5))
        let payload = Array(message.readableBytesView)
        for (stream, method) in [(UInt32(1), "Hold"), (3, "Chat")] {
            try request(client, stream, headers(method), nil)
            for _ in 0..<40 { try client.send(client.frame(HTTP2Wire.FrameType.data, stream: stream, payload)) }
        }
        // Besides the grant of the rest of the 1 MiB stream window at each stream's first DATA (it starts at 64 KiB).
        let opening: [UInt8] = [0, 0x0F, 0, 0]
        let updates = try client.frames().filter { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.payload != opening }
            .map(\.stream)
        #expect(!updates.contains(1), "Hold has paused: its 640 kB wait for it")
        #expect(updates.contains(3), "Chat took its messages: their bytes went back")
    }
}
