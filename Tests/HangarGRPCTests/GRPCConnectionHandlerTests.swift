import Foundation
import HangarComponents
import HangarRuntime
import Logging
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import SwiftProtobuf
import Testing

@_spi(Benchmarks) @testable import HangarGRPC

/// The gRPC connection handler driven frame by frame on an `EmbeddedChannel`.
@Suite("gRPC connection handler")
struct GRPCConnectionHandlerTests {
    let app = AppID(namespace: "team-a", appId: "echo")

    /// A connection under test: Hangar's server on one EmbeddedChannel (bytes), swift-nio-http2's client on
    /// another, and `pump()` carrying bytes between them.
    final class Pair {
        let server: EmbeddedChannel
        let client: EmbeddedChannel

        init(server: EmbeddedChannel, clientSettings: HTTP2Settings) throws {
            self.server = server
            client = EmbeddedChannel(handler: NIOHTTP2Handler(mode: .client, initialSettings: clientSettings))
            try server.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
            try client.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/x")).wait()
            try pump()
            _ = try frames()  // SETTINGS, WINDOW_UPDATE, SETTINGS ACK
        }

        /// Carries every pending byte both ways until neither side has more; each side's bytes go in as one read.
        func pump() throws {
            var moved = true
            while moved {
                moved = false
                if let bytes = try Self.drain(client) {
                    try server.writeInbound(bytes)
                    moved = true
                }
                if let bytes = try Self.drain(server) {
                    try client.writeInbound(bytes)
                    moved = true
                }
            }
        }

        static func drain(_ channel: EmbeddedChannel) throws -> ByteBuffer? {
            var all: ByteBuffer?
            while var bytes = try channel.readOutbound(as: ByteBuffer.self) {
                if all == nil { all = bytes } else { all!.writeBuffer(&bytes) }
            }
            return all
        }

        func write(_ frame: HTTP2Frame) {
            client.write(frame, promise: nil)
        }

        /// Flushes what the client wrote and returns the frames it then received.
        func exchange() throws -> [HTTP2Frame] {
            client.flush()
            try pump()
            return try frames()
        }

        func frames() throws -> [HTTP2Frame] {
            var frames: [HTTP2Frame] = []
            while let frame = try client.readInbound(as: HTTP2Frame.self) { frames.append(frame) }
            return frames
        }
    }

    func makeService() -> GRPCService {
        var service = GRPCService()
        service.unary("/hangar.test.v1.Echo/Echo", Google_Protobuf_BytesValue.self) { request, call in
            var response = Google_Protobuf_BytesValue()
            response.value = request.value + Data(call.caller.appId.utf8)
            return .success(response)
        }
        service.unary("/hangar.test.v1.Echo/Never", Google_Protobuf_BytesValue.self) { _, call in
            .later(call.eventLoop.makePromise(of: Google_Protobuf_BytesValue.self).futureResult)
        }
        return service
    }

    func makeGate(maxRequestBytes: Int = 1024) -> Gate {
        Gate(
            registry: TenantRegistry(
                configuration: NodeConfiguration(
                    tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "echo")])], components: []),
                maxRequestBytes: maxRequestBytes))
    }

    func serverChannel(maxRequestBytes: Int = 1024, gate: Gate? = nil) -> EmbeddedChannel {
        let handler = GRPCConnectionHandler(
            service: makeService(), identity: .app(app), gate: gate ?? makeGate(maxRequestBytes: maxRequestBytes),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        return EmbeddedChannel(handler: handler.makeConnection())
    }

    func channel(
        maxRequestBytes: Int = 1024, gate: Gate? = nil,
        clientSettings: HTTP2Settings = [HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20)]
    ) throws -> Pair {
        try Pair(server: serverChannel(maxRequestBytes: maxRequestBytes, gate: gate), clientSettings: clientSettings)
    }

    func requestHeaders(_ path: String, contentType: String = "application/grpc", extra: [(String, String)] = [])
        -> HPACKHeaders
    {
        var headers: HPACKHeaders = [
            ":method": "POST", ":path": path, ":scheme": "http", ":authority": "localhost", "content-type": contentType,
        ]
        for (name, value) in extra { headers.add(name: name, value: value) }
        return headers
    }

    func send(_ channel: Pair, _ id: HTTP2StreamID, headers: HPACKHeaders, message: ByteBuffer?) throws {
        channel.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: message == nil))))
        if let message {
            channel.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(message), endStream: true))))
        }
    }

    func echo(_ payload: String) throws -> ByteBuffer {
        var request = Google_Protobuf_BytesValue()
        request.value = Data(payload.utf8)
        return try GRPCService.frame(request)
    }

    /// The frames the client received on streams (not the connection's own).
    func frames(_ channel: Pair) throws -> [HTTP2Frame] {
        try channel.exchange().filter { $0.streamID != .rootStream }
    }

    func trailers(_ frames: [HTTP2Frame]) -> HPACKHeaders? {
        for frame in frames.reversed() {
            if case .headers(let headers) = frame.payload, headers.endStream { return headers.headers }
        }
        return nil
    }

    @Test("a unary call is answered with HEADERS, one DATA message and grpc-status 0 trailers")
    func unaryCall() throws {
        let channel = try channel()
        try send(channel, 1, headers: requestHeaders("/hangar.test.v1.Echo/Echo"), message: try echo("hi "))
        let out = try frames(channel)
        #expect(out.count == 3)
        guard case .data(let data) = out[1].payload, case .byteBuffer(var body) = data.data else {
            Issue.record("expected a DATA frame")
            return
        }
        let flag = body.readInteger(as: UInt8.self)
        let prefix = body.readInteger(as: UInt32.self)
        #expect(flag == 0)
        let length = try #require(prefix)
        let response = try Google_Protobuf_BytesValue(
            serializedBytes: Array(body.readableBytesView.prefix(Int(length))))
        #expect(String(decoding: response.value, as: UTF8.self) == "hi echo")
        #expect(trailers(out)?.first(name: "grpc-status") == "0")
    }

    @Test("an unknown method is UNIMPLEMENTED with the method named")
    func unknownMethod() throws {
        let channel = try channel()
        try send(channel, 1, headers: requestHeaders("/dapr.proto.runtime.v1.Dapr/InvokeActor"), message: try echo(""))
        let out = try frames(channel)
        let trailers = try #require(self.trailers(out))
        #expect(trailers.first(name: "grpc-status") == "12")
        #expect(trailers.first(name: "grpc-message")?.contains("InvokeActor") == true)
    }

    @Test("a non-gRPC request gets an HTTP error status")
    func notGRPC() throws {
        let channel = try channel()
        try send(channel, 1, headers: requestHeaders("/x", contentType: "text/html"), message: nil)
        let out = try frames(channel)
        guard case .headers(let headers) = out.first?.payload else {
            Issue.record("expected HEADERS")
            return
        }
        #expect(headers.headers.first(name: ":status") == "415")
    }

    @Test("a message over the limit is RESOURCE_EXHAUSTED as soon as its length prefix arrives")
    func tooLarge() throws {
        let channel = try channel(maxRequestBytes: 16)
        var prefix = ByteBuffer()
        prefix.writeInteger(UInt8(0))
        prefix.writeInteger(UInt32(1 << 30))
        channel.write(
            HTTP2Frame(streamID: 1, payload: .headers(.init(headers: requestHeaders("/hangar.test.v1.Echo/Echo")))))
        channel.write(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(prefix)))))
        let out = try frames(channel)
        let trailers = try #require(self.trailers(out))
        #expect(trailers.first(name: "grpc-status") == "8")
        #expect(out.contains { if case .rstStream(.noError) = $0.payload { true } else { false } })
    }

    @Test("a call refused at HEADERS whose request ends in the same read is not reset; one that does not end, is")
    func earlyRefusalResets() throws {
        let channel = try channel()
        let refused = requestHeaders("/dapr.proto.runtime.v1.Dapr/InvokeActor")
        // HEADERS and DATA(END_STREAM) in one read: answered, and no RST_STREAM (clients count resets).
        channel.write(HTTP2Frame(streamID: 1, payload: .headers(.init(headers: refused))))
        channel.write(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(try echo("x")), endStream: true))))
        var out = try frames(channel)
        #expect(trailers(out)?.first(name: "grpc-status") == "12")
        #expect(!out.contains { if case .rstStream = $0.payload { true } else { false } })
        // HEADERS alone: the stream is reset once the read ends, so the client stops sending.
        channel.write(HTTP2Frame(streamID: 3, payload: .headers(.init(headers: refused))))
        out = try frames(channel)
        #expect(trailers(out)?.first(name: "grpc-status") == "12")
        #expect(out.contains { $0.streamID == 3 && { if case .rstStream(.noError) = $0.payload { true } else { false } }($0) })
    }

    @Test("invalid protobuf is INVALID_ARGUMENT and the connection keeps serving")
    func invalidProtobuf() throws {
        let channel = try channel()
        var garbage = ByteBuffer()
        garbage.writeInteger(UInt8(0))
        garbage.writeInteger(UInt32(3))
        garbage.writeBytes([0xFF, 0xFF, 0xFF])
        try send(channel, 1, headers: requestHeaders("/hangar.test.v1.Echo/Echo"), message: garbage)
        #expect(trailers(try frames(channel))?.first(name: "grpc-status") == "3")
        try send(channel, 3, headers: requestHeaders("/hangar.test.v1.Echo/Echo"), message: try echo("again"))
        #expect(trailers(try frames(channel))?.first(name: "grpc-status") == "0")
    }

    @Test("grpc-timeout ends a call that has not answered with DEADLINE_EXCEEDED")
    func deadline() throws {
        let channel = try channel()
        try send(
            channel, 1, headers: requestHeaders("/hangar.test.v1.Echo/Never", extra: [("grpc-timeout", "50m")]),
            message: try echo(""))
        #expect(try frames(channel).isEmpty)
        channel.server.embeddedEventLoop.advanceTime(by: .milliseconds(60))
        #expect(trailers(try frames(channel))?.first(name: "grpc-status") == "4")
    }

    @Test("compression other than identity is refused")
    func compression() throws {
        let channel = try channel()
        try send(
            channel, 1, headers: requestHeaders("/hangar.test.v1.Echo/Echo", extra: [("grpc-encoding", "gzip")]),
            message: try echo(""))
        #expect(trailers(try frames(channel))?.first(name: "grpc-status") == "12")
    }

    @Test(
        "grpc-timeout values",
        arguments: [
            ("100m", TimeAmount.milliseconds(100)), ("2S", .seconds(2)), ("1H", .hours(1)), ("5u", .microseconds(5)),
        ])
    func timeouts(value: String, expected: TimeAmount) {
        #expect(GRPCConnectionHandler.parseTimeout(value) == expected)
    }

    @Test("error statuses carry ErrorInfo in grpc-status-details-bin and a percent-encoded message")
    func statusDetails() throws {
        let error = APIError(
            errorCode: "ERR_STATE_SAVE", rpcCode: .aborted, httpStatus: 409, message: "etag mismatch 100% ✓",
            reason: "DAPR_STATE_ETAG_MISMATCH")
        var headers = HPACKHeaders()
        GRPCStatus(error).addTrailers(to: &headers)
        #expect(headers.first(name: "grpc-status") == "10")
        #expect(headers.first(name: "grpc-message") == "etag mismatch 100%25 %E2%9C%93")
        let details = try #require(headers.first(name: "grpc-status-details-bin").flatMap { Data(base64Encoded: $0) })
        let status = try Google_Rpc_Status(serializedBytes: details)
        let info = try Google_Rpc_ErrorInfo(unpackingAny: try #require(status.details.first))
        #expect(info.domain == "dapr.io")
        #expect(info.reason == "DAPR_STATE_ETAG_MISMATCH")
        #expect(info.metadata["errorCode"] == "ERR_STATE_SAVE")
    }
}
