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

/// Hangar's HTTP/2 connection at the frame level: flow control and frame sizes against swift-nio-http2's client, and
/// what a hostile or broken client gets, in raw bytes.
@Suite("HTTP/2 server connection")
struct HTTP2ServerConnectionTests {
    let handlerTests = GRPCConnectionHandlerTests()

    /// One frame as the server wrote it.
    struct RawFrame {
        let type: UInt8
        let flags: UInt8
        let stream: UInt32
        let payload: [UInt8]

        var errorCode: UInt32? {
            switch type {
            case HTTP2Wire.FrameType.goAway where payload.count >= 8:
                UInt32(payload[4]) << 24 | UInt32(payload[5]) << 16 | UInt32(payload[6]) << 8 | UInt32(payload[7])
            case HTTP2Wire.FrameType.rstStream where payload.count == 4:
                UInt32(payload[0]) << 24 | UInt32(payload[1]) << 16 | UInt32(payload[2]) << 8 | UInt32(payload[3])
            default: nil
            }
        }
    }

    /// A client made of bytes, for what a well-behaved client library refuses to send.
    final class RawClient {
        let channel: EmbeddedChannel
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())

        init(_ channel: EmbeddedChannel, preface: Bool = true) throws {
            self.channel = channel
            try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
            if preface {
                var bytes = ByteBuffer(bytes: HTTP2Wire.preface)
                bytes.writeHTTP2FrameHeader(length: 0, type: HTTP2Wire.FrameType.settings, flags: 0, stream: 0)
                try channel.writeInbound(bytes)
                _ = try frames()
            }
        }

        /// A client whose preface's SETTINGS give every stream a receive window of `initialWindow` bytes.
        convenience init(_ channel: EmbeddedChannel, initialWindow: UInt32) throws {
            try self.init(channel, preface: false)
            var hello = ByteBuffer(bytes: HTTP2Wire.preface)
            hello.writeHTTP2FrameHeader(length: 6, type: HTTP2Wire.FrameType.settings, flags: 0, stream: 0)
            hello.writeInteger(HTTP2Wire.Setting.initialWindowSize)
            hello.writeInteger(initialWindow)
            try send(hello)
            _ = try frames()
        }

        func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8] = []) -> ByteBuffer {
            var bytes = ByteBuffer()
            bytes.writeHTTP2FrameHeader(length: payload.count, type: type, flags: flags, stream: stream)
            bytes.writeBytes(payload)
            return bytes
        }

        func send(_ buffers: ByteBuffer...) throws {
            var all = ByteBuffer()
            for var buffer in buffers { all.writeBuffer(&buffer) }
            try channel.writeInbound(all)
        }

        func headerBlock(_ headers: HPACKHeaders) throws -> [UInt8] {
            var out = ByteBuffer()
            try encoder.encode(headers: headers, to: &out)
            return Array(out.readableBytesView)
        }

        func frames() throws -> [RawFrame] {
            var bytes = ByteBuffer()
            while var chunk = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&chunk) }
            var frames: [RawFrame] = []
            while let header = HTTP2Wire.FrameHeader.peek(bytes), bytes.readableBytes >= 9 + header.length {
                bytes.moveReaderIndex(forwardBy: 9)
                frames.append(
                    RawFrame(
                        type: header.type, flags: header.flags, stream: header.stream,
                        payload: bytes.readBytes(length: header.length)!))
            }
            return frames
        }

        func goAway() throws -> RawFrame? {
            try frames().first { $0.type == HTTP2Wire.FrameType.goAway }
        }
    }

    func raw(settings: HTTP2ServerConnection.Settings = .init(), gate: Gate? = nil, preface: Bool = true) throws
        -> RawClient
    {
        let handler = GRPCConnectionHandler(
            service: handlerTests.makeService(), identity: .app(handlerTests.app),
            gate: gate ?? handlerTests.makeGate(maxRequestBytes: 64 * 1024),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return try RawClient(EmbeddedChannel(handler: handler.makeConnection(settings: settings)), preface: preface)
    }

    func echoPath() -> HPACKHeaders { handlerTests.requestHeaders("/hangar.test.v1.Echo/Echo") }

    // MARK: Against swift-nio-http2's client

    @Test("response DATA waits for the client's stream window and resumes on WINDOW_UPDATE")
    func flowControl() throws {
        let pair = try handlerTests.channel(
            maxRequestBytes: 4096, clientSettings: [HTTP2Setting(parameter: .initialWindowSize, value: 10)])
        try handlerTests.send(
            pair, 1, headers: echoPath(), message: try handlerTests.echo(String(repeating: "x", count: 100)))
        var out = try handlerTests.frames(pair)
        let early = out.compactMap { frame -> Int? in
            if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data { bytes.readableBytes } else { nil }
        }
        #expect(early.reduce(0, +) == 10)
        #expect(handlerTests.trailers(out) == nil)
        pair.write(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 1000)))
        out = try handlerTests.frames(pair)
        let rest = out.compactMap { frame -> Int? in
            if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data { bytes.readableBytes } else { nil }
        }
        // 5-byte prefix + protobuf (field tag, length varint, 100 + 4 bytes of payload).
        let expected = 5 + 2 + 104
        #expect(10 + rest.reduce(0, +) == expected)
        #expect(handlerTests.trailers(out)?.first(name: "grpc-status") == "0")
    }

    @Test("a response larger than a frame is split at the client's SETTINGS_MAX_FRAME_SIZE")
    func largeResponse() throws {
        let pair = try handlerTests.channel(maxRequestBytes: 64 * 1024)
        try handlerTests.send(
            pair, 1, headers: echoPath(), message: try handlerTests.echo(String(repeating: "y", count: 40_000)))
        let out = try handlerTests.frames(pair)
        let sizes = out.compactMap { frame -> Int? in
            if case .data(let data) = frame.payload, case .byteBuffer(let bytes) = data.data { bytes.readableBytes } else { nil }
        }
        #expect(sizes.count == 3)
        #expect(sizes.allSatisfy { $0 <= 16_384 })
        #expect(handlerTests.trailers(out)?.first(name: "grpc-status") == "0")
    }

    @Test("a call the client resets before its request ends is dropped and gives its concurrency slot back")
    func clientReset() throws {
        let quotas = Quotas(requestsPerSecond: 1000, burst: 1000, maxConcurrentRequests: 1, maxConnections: 10)
        let gate = Gate(
            registry: TenantRegistry(
                configuration: NodeConfiguration(
                    tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "echo")], quotas: quotas)],
                    components: []),
                maxRequestBytes: 1024))
        let pair = try handlerTests.channel(gate: gate)
        let never = handlerTests.requestHeaders("/hangar.test.v1.Echo/Never")
        // Admitted at its HEADERS; its message has not come yet.
        pair.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: never))))
        #expect(try handlerTests.frames(pair).isEmpty)
        // The only slot is taken: a second call is refused.
        try handlerTests.send(pair, 3, headers: never, message: try handlerTests.echo(""))
        #expect(handlerTests.trailers(try handlerTests.frames(pair))?.first(name: "grpc-status") == "8")
        pair.write(HTTP2Frame(streamID: 1, payload: .rstStream(.cancel)))
        #expect(try handlerTests.frames(pair).isEmpty)
        // Stream 1's slot is back: this one is admitted and waits.
        try handlerTests.send(pair, 5, headers: never, message: try handlerTests.echo(""))
        let answered = try handlerTests.frames(pair)
        #expect(answered.isEmpty, "\(answered)")
    }

    // MARK: Raw bytes

    @Test("bytes that are not the HTTP/2 preface get GOAWAY PROTOCOL_ERROR and the connection closes")
    func badPreface() throws {
        let client = try raw(preface: false)
        try client.send(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
        let goAway = try #require(try client.goAway())
        #expect(goAway.errorCode == HTTP2Wire.ErrorCode.protocolError.rawValue)
        #expect(!client.channel.isActive)
    }

    @Test("PING is answered with the same 8 bytes")
    func ping() throws {
        let client = try raw()
        try client.send(client.frame(HTTP2Wire.FrameType.ping, stream: 0, [1, 2, 3, 4, 5, 6, 7, 8]))
        let frames = try client.frames()
        #expect(frames.count == 1)
        #expect(frames.first?.type == HTTP2Wire.FrameType.ping)
        #expect(frames.first?.flags == HTTP2Wire.Flag.ack)
        #expect(frames.first?.payload == [1, 2, 3, 4, 5, 6, 7, 8])
    }

    @Test(
        "protocol violations end the connection with the matching GOAWAY",
        arguments: [
            ("a frame over 16 KiB", HTTP2Wire.FrameType.data, UInt32(1), 16_385, HTTP2Wire.ErrorCode.frameSizeError),
            ("DATA on stream 0", HTTP2Wire.FrameType.data, 0, 4, .protocolError),
            ("DATA on a stream never opened", HTTP2Wire.FrameType.data, 7, 4, .protocolError),
            ("PUSH_PROMISE from a client", HTTP2Wire.FrameType.pushPromise, 1, 4, .protocolError),
            ("PING of 3 bytes", HTTP2Wire.FrameType.ping, 0, 3, .frameSizeError),
            ("WINDOW_UPDATE of 0 on the connection", HTTP2Wire.FrameType.windowUpdate, 0, 4, .protocolError),
            ("SETTINGS of 5 bytes", HTTP2Wire.FrameType.settings, 0, 5, .frameSizeError),
            ("RST_STREAM on stream 0", HTTP2Wire.FrameType.rstStream, 0, 4, .protocolError),
        ] as [(String, UInt8, UInt32, Int, HTTP2Wire.ErrorCode)])
    func violations(name: String, type: UInt8, stream: UInt32, length: Int, code: HTTP2Wire.ErrorCode) throws {
        let client = try raw()
        try client.send(client.frame(type, stream: stream, [UInt8](repeating: 0, count: length)))
        let goAway = try #require(try client.goAway(), "\(name)")
        #expect(goAway.errorCode == code.rawValue, "\(name)")
        #expect(!client.channel.isActive, "\(name)")
    }

    @Test("a header block that does not decode is COMPRESSION_ERROR")
    func badHPACK() throws {
        let client = try raw()
        try client.send(
            client.frame(
                HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: 1, [0xFF, 0xFF, 0xFF, 0xFF]))
        #expect(try client.goAway()?.errorCode == HTTP2Wire.ErrorCode.compressionError.rawValue)
    }

    @Test("headers split over CONTINUATION frames are reassembled; a flood of them ends the connection")
    func continuation() throws {
        let client = try raw()
        let block = try client.headerBlock(echoPath())
        let half = block.count / 2
        var message = try handlerTests.echo("split")
        try client.send(
            client.frame(HTTP2Wire.FrameType.headers, stream: 1, Array(block[..<half])),
            client.frame(
                HTTP2Wire.FrameType.continuation, flags: HTTP2Wire.Flag.endHeaders, stream: 1, Array(block[half...])),
            client.frame(
                HTTP2Wire.FrameType.data, flags: HTTP2Wire.Flag.endStream, stream: 1,
                message.readBytes(length: message.readableBytes)!))
        let answered = try client.frames()
        #expect(answered.map(\.type) == [HTTP2Wire.FrameType.headers, HTTP2Wire.FrameType.data, HTTP2Wire.FrameType.headers])

        try client.send(client.frame(HTTP2Wire.FrameType.headers, stream: 3, Array(block[..<1])))
        for _ in 0..<40 { try client.send(client.frame(HTTP2Wire.FrameType.continuation, stream: 3)) }
        #expect(try client.goAway()?.errorCode == HTTP2Wire.ErrorCode.enhanceYourCalm.rawValue)
    }

    @Test("a stream over SETTINGS_MAX_CONCURRENT_STREAMS is refused with REFUSED_STREAM; the others are served")
    func tooManyStreams() throws {
        var settings = HTTP2ServerConnection.Settings()
        settings.maxConcurrentStreams = 2
        let client = try raw(settings: settings)
        let never = try client.headerBlock(handlerTests.requestHeaders("/hangar.test.v1.Echo/Never"))
        for stream: UInt32 in [1, 3, 5] {
            try client.send(client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, never))
        }
        let frames = try client.frames()
        #expect(frames.count == 1)
        #expect(frames.first?.stream == 5)
        #expect(frames.first?.errorCode == HTTP2Wire.ErrorCode.refusedStream.rawValue)
        #expect(client.channel.isActive)
    }

    @Test("more than 200 resets from a client in 30 s is ENHANCE_YOUR_CALM")
    func rapidReset() throws {
        let client = try raw()
        let never = try client.headerBlock(handlerTests.requestHeaders("/hangar.test.v1.Echo/Never"))
        var stream: UInt32 = 1
        for _ in 0..<201 {
            try client.send(
                client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, never),
                client.frame(HTTP2Wire.FrameType.rstStream, stream: stream, [0, 0, 0, 8]))
            stream += 2
        }
        #expect(try client.goAway()?.errorCode == HTTP2Wire.ErrorCode.enhanceYourCalm.rawValue)
    }

    @Test("resets of streams already answered do not count towards the rapid-reset limit")
    func resetsAfterAnswers() throws {
        let client = try raw()
        let block = try client.headerBlock(echoPath())
        var message = try handlerTests.echo("x")
        let bytes = message.readBytes(length: message.readableBytes)!
        var stream: UInt32 = 1
        // A client cancelling each call after its answer (as after a refusal) is not resetting work in progress.
        for _ in 0..<300 {
            try client.send(
                client.frame(HTTP2Wire.FrameType.headers, flags: HTTP2Wire.Flag.endHeaders, stream: stream, block),
                client.frame(HTTP2Wire.FrameType.data, flags: HTTP2Wire.Flag.endStream, stream: stream, bytes),
                client.frame(HTTP2Wire.FrameType.rstStream, stream: stream, [0, 0, 0, 8]))
            stream += 2
        }
        let frames = try client.frames()
        #expect(!frames.contains { $0.type == HTTP2Wire.FrameType.goAway })
        #expect(frames.filter { $0.type == HTTP2Wire.FrameType.data }.count == 300)
        #expect(client.channel.isActive)
    }

    @Test("response header blocks decode with a standard HPACK decoder")
    func encodedHeaders() throws {
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        var head = ByteBuffer(bytes: HPACKLiteral.grpcResponseHead)
        let headers = try decoder.decodeHeaders(from: &head)
        #expect(headers.first(name: ":status") == "200")
        #expect(headers.first(name: "content-type") == "application/grpc")
        let long = String(repeating: "m", count: 300)
        var block = ByteBuffer(bytes: HPACKLiteral.encode([(":status", "415"), ("grpc-message", long)]))
        let decoded = try decoder.decodeHeaders(from: &block)
        #expect(decoded.first(name: ":status") == "415")
        #expect(decoded.first(name: "grpc-message") == long)
    }
}
