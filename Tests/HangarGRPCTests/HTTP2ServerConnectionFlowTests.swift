import NIOCore
import NIOEmbedded
import NIOHPACK
import Testing

@testable import HangarGRPC

/// Per-stream flow control of Hangar's HTTP/2 connection, under a scripted layer above it and a client made of bytes:
/// queues per stream, turns on the connection window, windows credited on consumption, no reset before the answer.
@Suite("HTTP/2 server connection flow control")
struct HTTP2ServerConnectionFlowTests {
    typealias RawClient = HTTP2ServerConnectionTests.RawClient
    typealias RawFrame = HTTP2ServerConnectionTests.RawFrame

    /// The layer above, scripted: answers what `onHeaders` says, consumes nothing unless told.
    final class Script: HTTP2ServerDelegate {
        var connection: HTTP2ServerConnection?
        var onHeaders: (UInt32) -> Void = { _ in }
        var received: [UInt32: Int] = [:]
        var resets: [UInt32] = []
        var writables: [UInt32] = []

        func received(headers: HPACKHeaders, stream: UInt32, endStream: Bool) {
            if received[stream] == nil {
                received[stream] = 0
                onHeaders(stream)
            }
        }

        func received(data: ByteBuffer, stream: UInt32, endStream: Bool) {
            received[stream, default: 0] += data.readableBytes
        }

        func reset(stream: UInt32) { resets.append(stream) }
        func writable(stream: UInt32) { writables.append(stream) }
        func awaitsRequest(stream: UInt32) -> Bool { false }
        func requestStalled(stream: UInt32, after: TimeAmount) {}
    }

    /// A connection under test with its script and raw client.
    final class Harness {
        let script = Script()
        let client: RawClient
        let connection: HTTP2ServerConnection

        /// A connection whose client announced `initialWindow` for its streams.
        init(initialWindow: UInt32 = 65_535, settings: HTTP2ServerConnection.Settings = .init()) throws {
            connection = HTTP2ServerConnection(delegate: script, settings: settings)
            script.connection = connection
            client = try RawClient(EmbeddedChannel(handler: connection), initialWindow: initialWindow)
        }

        func open(_ stream: UInt32, endStream: Bool = false) throws {
            let block = try client.headerBlock([":method": "POST", ":path": "/x", "content-type": "application/grpc"])
            let flags = HTTP2Wire.Flag.endHeaders | (endStream ? HTTP2Wire.Flag.endStream : 0)
            try client.send(client.frame(HTTP2Wire.FrameType.headers, flags: flags, stream: stream, block))
        }

        func windowUpdate(_ stream: UInt32, _ increment: UInt32) -> ByteBuffer {
            var payload = ByteBuffer()
            payload.writeInteger(increment)
            return client.frame(HTTP2Wire.FrameType.windowUpdate, stream: stream, Array(payload.readableBytesView))
        }

        func payload(_ count: Int) -> ByteBuffer { ByteBuffer(repeating: 1, count: count) }

        func dataBytes(_ frames: [RawFrame], stream: UInt32) -> Int {
            frames.filter { $0.type == HTTP2Wire.FrameType.data && $0.stream == stream }.reduce(0) {
                $0 + $1.payload.count
            }
        }

        func ended(_ frames: [RawFrame], stream: UInt32) -> Bool {
            frames.contains {
                $0.stream == stream && $0.type != HTTP2Wire.FrameType.rstStream
                    && $0.flags & HTTP2Wire.Flag.endStream != 0
            }
        }

        func resetCode(_ frames: [RawFrame], stream: UInt32) -> UInt32? {
            frames.first { $0.type == HTTP2Wire.FrameType.rstStream && $0.stream == stream }?.errorCode
        }
    }

    @Test("a stream answered before its request ends is reset only after its queued DATA and trailers are out")
    func noResetWhileQueued() throws {
        let test = try Harness(initialWindow: 10)
        test.script.onHeaders = { id in
            test.connection.respond(id, message: test.payload(100), trailers: HPACKLiteral.grpcOKTrailers)
        }
        try test.open(1)
        var frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 1) == 10)
        #expect(test.resetCode(frames, stream: 1) == nil, "DATA is still queued: no RST_STREAM may overtake it")
        #expect(!test.ended(frames, stream: 1))

        try test.client.send(test.windowUpdate(1, 1000))
        frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 1) == 90)
        #expect(test.ended(frames, stream: 1))
        #expect(test.resetCode(frames, stream: 1) == HTTP2Wire.ErrorCode.noError.rawValue)
        let rst = try #require(frames.firstIndex { $0.type == HTTP2Wire.FrameType.rstStream })
        let trailers = try #require(frames.firstIndex { $0.type == HTTP2Wire.FrameType.headers })
        #expect(trailers < rst)
    }

    @Test("a stream without window of its own does not hold up another stream's answer")
    func slowStreamAlone() throws {
        let test = try Harness(initialWindow: 100)
        test.script.onHeaders = { id in
            let size = id == 1 ? 5000 : 50
            test.connection.respond(id, message: test.payload(size), trailers: HPACKLiteral.grpcOKTrailers)
        }
        try test.open(1, endStream: true)
        var frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 1) == 100)
        try test.open(3, endStream: true)
        frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 3) == 50)
        #expect(test.ended(frames, stream: 3))
        #expect(test.dataBytes(frames, stream: 1) == 0)
    }

    @Test("streams waiting for the connection window take turns when it opens")
    func fairShare() throws {
        let test = try Harness(initialWindow: 1 << 20)
        test.script.onHeaders = { id in
            test.connection.respond(id, message: test.payload(70_000), trailers: HPACKLiteral.grpcOKTrailers)
        }
        try test.open(1, endStream: true)
        try test.open(3, endStream: true)
        var frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 1) == 65_535, "the connection's initial window, all to the first")
        #expect(test.dataBytes(frames, stream: 3) == 0)
        try test.client.send(test.windowUpdate(0, 3 * 16_384))
        frames = try test.client.frames()
        let order = frames.filter { $0.type == HTTP2Wire.FrameType.data }.map(\.stream)
        #expect(order == [1, 3, 3, 3], "a frame each in turn: stream 1's rest and trailers, stream 3 in between")
        #expect(test.ended(frames, stream: 1))
        #expect(test.dataBytes(frames, stream: 3) == 3 * 16_384 - (70_000 - 65_535))
    }

    @Test("request bytes go back to the client as stream window when consumed, not when they arrive")
    func creditOnConsume() throws {
        var settings = HTTP2ServerConnection.Settings()
        settings.streamWindow = 1000
        let test = try Harness(settings: settings)
        try test.open(1)
        try test.client.send(test.client.frame(HTTP2Wire.FrameType.data, stream: 1, [UInt8](repeating: 0, count: 900)))
        var frames = try test.client.frames()
        #expect(test.script.received[1] == 900)
        #expect(!frames.contains { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.stream == 1 })
        // Up to the window: still nothing back.
        try test.client.send(test.client.frame(HTTP2Wire.FrameType.data, stream: 1, [UInt8](repeating: 0, count: 100)))
        #expect(try test.client.frames().isEmpty)
        test.connection.consumed(1, bytes: 600)
        frames = try test.client.frames()
        let update = try #require(frames.first { $0.type == HTTP2Wire.FrameType.windowUpdate && $0.stream == 1 })
        #expect(update.payload == [0, 0, 0x02, 0x58])
        try test.client.send(test.client.frame(HTTP2Wire.FrameType.data, stream: 1, [UInt8](repeating: 0, count: 601)))
        frames = try test.client.frames()
        #expect(test.resetCode(frames, stream: 1) == HTTP2Wire.ErrorCode.flowControlError.rawValue)
        #expect(test.script.resets == [1])
    }

    @Test("send reports a full stream queue and writable follows once the client's window drains it")
    func writability() throws {
        var settings = HTTP2ServerConnection.Settings()
        settings.streamWriteBufferBytes = 1000
        let test = try Harness(initialWindow: 10, settings: settings)
        test.script.onHeaders = { id in test.connection.sendHeaders(id, HPACKLiteral.grpcResponseHead) }
        try test.open(1)
        #expect(test.connection.send(1, test.payload(500)))
        #expect(!test.connection.send(1, test.payload(600)))
        #expect(!test.connection.isWritable(1))
        _ = try test.client.frames()
        try test.client.send(test.windowUpdate(1, 300))
        #expect(test.script.writables.isEmpty, "still over half the limit")
        try test.client.send(test.windowUpdate(1, 400))
        #expect(test.script.writables == [1])
        #expect(test.connection.isWritable(1))
        test.connection.respond(1, headersOnly: HPACKLiteral.grpcOKTrailers)
        try test.client.send(test.windowUpdate(1, 1000))
        let frames = try test.client.frames()
        #expect(test.dataBytes(frames, stream: 1) == 1090)
        #expect(test.ended(frames, stream: 1))
    }
}
