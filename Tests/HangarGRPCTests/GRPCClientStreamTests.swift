import HangarRuntime
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@testable import HangarGRPC

/// The app channel's streamed calls (gRPC proxying): `GRPCClientConnectionHandler` and `GRPCClientStream` on an
/// EmbeddedChannel, with the HTTP/2 frames they write read back and the app's frames fed in.
@Suite("gRPC app channel streams")
struct GRPCClientStreamTests {
    /// What the observer heard, in order.
    final class Recorder: AppStreamObserver {
        var events: [String] = []
        var data = ByteBuffer()

        func appStream(headers: [(name: String, value: String)]) {
            events.append("headers " + headers.map { "\($0.name)=\($0.value)" }.joined(separator: ","))
        }

        func appStream(data: ByteBuffer) {
            var data = data
            events.append("data \(data.readableBytes)")
            self.data.writeBuffer(&data)
        }

        func appStreamWritable() {
            events.append("writable")
        }

        func appStream(finished result: Result<[(name: String, value: String)], any Error>) {
            switch result {
            case .success(let trailers):
                events.append("trailers " + trailers.map { "\($0.name)=\($0.value)" }.joined(separator: ","))
            case .failure(let error):
                events.append("failed \(error)")
            }
        }
    }

    struct Connection {
        let channel: EmbeddedChannel
        let handler: GRPCClientConnectionHandler
        var loop: EmbeddedEventLoop { channel.embeddedEventLoop }

        init() throws {
            channel = EmbeddedChannel()
            handler = GRPCClientConnectionHandler(maxResponseBytes: 1 << 20, onGoingAway: {})
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            _ = try channel.readOutbound(as: HTTP2Frame.self)  // the connection's WINDOW_UPDATE
        }

        func open(_ recorder: Recorder, deadline: NIODeadline? = nil) throws -> GRPCClientStream {
            try handler.openStream(
                path: "/test.Echo/Chat", authority: "localhost", metadata: [("x-caller", "1")], deadline: deadline,
                observer: recorder
            ).get()
        }

        /// Every frame written so far (after the end of the event loop's turn).
        func written() throws -> [HTTP2Frame] {
            loop.run()
            var frames: [HTTP2Frame] = []
            while let frame = try channel.readOutbound(as: HTTP2Frame.self) { frames.append(frame) }
            return frames
        }

        func receive(_ id: HTTP2StreamID, _ payload: HTTP2Frame.FramePayload) throws {
            try channel.writeInbound(HTTP2Frame(streamID: id, payload: payload))
        }
    }

    /// A frame in a word or two, for comparisons (frame payloads are not Equatable).
    static func describe(_ frame: HTTP2Frame?) -> String {
        switch frame?.payload {
        case .headers(let headers): "headers\(headers.endStream ? " end" : "")"
        case .data(let data): "data \(data.data.readableBytes)\(data.endStream ? " end" : "")"
        case .rstStream(let code): "reset \(code)"
        case .windowUpdate(let increment): "window \(increment)"
        case nil: "nothing"
        default: "other"
        }
    }

    static func framed(_ text: String) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(text.utf8.count))
        buffer.writeString(text)
        return buffer
    }

    static func head(_ extra: [(String, String)] = [], endStream: Bool = false) -> HTTP2Frame.FramePayload {
        var headers: HPACKHeaders = [":status": "200", "content-type": "application/grpc"]
        for (name, value) in extra { headers.add(name: name, value: value) }
        return .headers(.init(headers: headers, endStream: endStream))
    }

    static func trailers(_ fields: [(String, String)]) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: HPACKHeaders(fields), endStream: true))
    }

    static func data(_ buffer: ByteBuffer, endStream: Bool = false) -> HTTP2Frame.FramePayload {
        .data(.init(data: .byteBuffer(buffer), endStream: endStream))
    }

    @Test("a unary-shaped call goes out as HEADERS and one DATA frame with END_STREAM; the answer is relayed in order")
    func unaryShape() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let stream = try connection.open(recorder)
        stream.send(Self.framed("hi"))
        stream.end()
        let frames = try connection.written()
        #expect(frames.count == 2)
        guard case .headers(let headers) = frames.first?.payload, case .data(let data) = frames.last?.payload else {
            Issue.record("expected HEADERS then DATA, got \(frames)")
            return
        }
        #expect(headers.headers.first(name: ":path") == "/test.Echo/Chat")
        #expect(headers.headers.first(name: "x-caller") == "1")
        #expect(headers.headers.first(name: "grpc-timeout") == nil)  // no deadline, none sent
        #expect(!headers.endStream)
        #expect(data.endStream)
        #expect(data.data == .byteBuffer(Self.framed("hi")))

        try connection.receive(stream.id, Self.head([("x-head", "h")]))
        try connection.receive(stream.id, Self.data(Self.framed("yo")))
        try connection.receive(stream.id, Self.trailers([("grpc-status", "0"), ("x-tail", "t")]))
        #expect(
            recorder.events == [
                "headers content-type=application/grpc,x-head=h", "data 7", "trailers grpc-status=0,x-tail=t",
            ])
        #expect(recorder.data == Self.framed("yo"))
        #expect(stream.isDone)
        #expect(try connection.written().isEmpty)  // the request had ended: nothing to reset
    }

    @Test("messages of a stream that goes on are written at the end of the loop's turn, not held for the end")
    func messagesGoOutAsTheyCome() throws {
        let connection = try Connection()
        let stream = try connection.open(Recorder())
        stream.send(Self.framed("a"))
        stream.send(Self.framed("b"))
        let frames = try connection.written()
        #expect(frames.count == 3)  // HEADERS, a, b
        guard case .data(let last) = frames.last?.payload else {
            Issue.record("no DATA: \(frames)")
            return
        }
        #expect(!last.endStream)
        stream.end()
        guard case .data(let end) = try connection.written().first?.payload else {
            Issue.record("no end")
            return
        }
        #expect(end.endStream)
    }

    @Test("a trailers-only answer and an app that answers before the request ended")
    func earlyAnswer() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let stream = try connection.open(recorder)
        stream.send(Self.framed("a"))
        _ = try connection.written()
        try connection.receive(stream.id, Self.head([("grpc-status", "5"), ("grpc-message", "no")], endStream: true))
        #expect(recorder.events == ["trailers content-type=application/grpc,grpc-status=5,grpc-message=no"])
        // The request side is closed with RST_STREAM(NO_ERROR); later sends are dropped.
        stream.send(Self.framed("b"))
        let frames = try connection.written()
        #expect(frames.count == 1)
        #expect(Self.describe(frames.first) == "reset \(HTTP2ErrorCode.noError)")
    }

    @Test("the caller's deadline goes to the app as grpc-timeout, and its passing cancels the stream")
    func deadline() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let deadline = NIODeadline.now() + .milliseconds(500)
        let stream = try connection.open(recorder, deadline: deadline)
        guard case .headers(let headers) = try connection.written().first?.payload else {
            Issue.record("no HEADERS")
            return
        }
        let timeout = headers.headers.first(name: "grpc-timeout")
        #expect(timeout?.hasSuffix("m") == true && (Int(timeout!.dropLast()) ?? 0) <= 500)
        connection.loop.advanceTime(to: deadline)
        #expect(Self.describe(try connection.written().first) == "reset \(HTTP2ErrorCode.cancel)")
        #expect(recorder.events == ["failed \(AppChannelError.deadlineExceeded)"])
        #expect(stream.isDone)
    }

    @Test("while paused the answer waits and is not credited to the app; resuming delivers it and returns the window")
    func pausedAnswer() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let stream = try connection.open(recorder)
        _ = try connection.written()
        try connection.receive(stream.id, Self.head())
        stream.pause()
        let chunk = ByteBuffer(repeating: 7, count: 200 * 1024)
        for _ in 0..<3 { try connection.receive(stream.id, Self.data(chunk)) }
        try connection.receive(stream.id, Self.trailers([("grpc-status", "0")]))
        #expect(recorder.events == ["headers content-type=application/grpc"])
        #expect(try connection.written().isEmpty)  // no WINDOW_UPDATE for bytes not taken
        stream.resume()
        #expect(recorder.events.count == 5)
        #expect(recorder.events.last == "trailers grpc-status=0")
        #expect(recorder.data.readableBytes == 600 * 1024)
        // The trailers had arrived: the app sends nothing more, so no window is owed (only the request side, still
        // open, is closed).
        #expect(try connection.written().map(Self.describe) == ["reset \(HTTP2ErrorCode.noError)"])

        let second = try connection.open(recorder)
        _ = try connection.written()
        try connection.receive(second.id, Self.head())
        second.pause()
        for _ in 0..<3 { try connection.receive(second.id, Self.data(chunk)) }
        #expect(try connection.written().isEmpty)
        second.resume()
        #expect(Self.describe(try connection.written().first) == "window \(600 * 1024)")
    }

    @Test("a stream with over 64 KiB unwritten is not writable until its bytes reach the socket")
    func writability() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let stream = try connection.open(recorder)
        #expect(stream.isWritable)
        stream.send(ByteBuffer(repeating: 1, count: 70 * 1024))
        #expect(!stream.isWritable)
        _ = try connection.written()  // flushed: EmbeddedChannel completes the writes
        #expect(stream.isWritable)
        #expect(recorder.events == ["writable"])
    }

    @Test("cancelling resets the stream (CANCEL) and the observer hears nothing more")
    func cancel() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let stream = try connection.open(recorder)
        _ = try connection.written()
        stream.cancel()
        #expect(Self.describe(try connection.written().first) == "reset \(HTTP2ErrorCode.cancel)")
        try connection.receive(stream.id, Self.head())
        try connection.receive(stream.id, Self.data(Self.framed("late")))
        #expect(recorder.events.isEmpty)
    }

    @Test("a reset by the app, a non-gRPC answer and the connection's end fail the stream")
    func failures() throws {
        let connection = try Connection()
        let recorder = Recorder()
        let reset = try connection.open(recorder)
        try connection.receive(reset.id, .rstStream(.internalError))
        #expect(recorder.events.last?.hasPrefix("failed the app is unreachable: the app reset the call") == true)

        let notGRPC = try connection.open(recorder)
        var headers = HPACKHeaders([(":status", "404")])
        headers.add(name: "content-type", value: "text/plain")
        try connection.receive(notGRPC.id, .headers(.init(headers: headers, endStream: true)))
        #expect(
            recorder.events.last == "failed \(AppChannelError.protocolViolation("HTTP status 404, not a gRPC answer"))")

        let noTrailers = try connection.open(recorder)
        try connection.receive(noTrailers.id, Self.head())
        try connection.receive(noTrailers.id, Self.data(Self.framed("x"), endStream: true))
        #expect(
            recorder.events.last == "failed \(AppChannelError.protocolViolation("the answer ended without trailers"))")

        let open = try connection.open(recorder)
        try connection.channel.close().wait()
        #expect(recorder.events.last == "failed \(AppChannelError.unreachable("the connection to the app closed"))")
        #expect(open.isDone)
    }
}
