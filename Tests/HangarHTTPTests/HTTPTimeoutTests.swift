import HangarComponents
import HangarRuntime
import HangarTransport
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HangarHTTP

/// The HTTP/1.1 connection's timeouts against slow clients (slowloris, a body that stops), on the real pipeline
/// (`HTTPServer.configure`) and the EmbeddedEventLoop's clock.
@Suite("HTTP/1.1 connection timeouts")
struct HTTPTimeoutTests {
    final class Seen: @unchecked Sendable {  // touched on the test's thread only
        var abandoned = 0
        var bodies: [String] = []
        var cancellations: [HTTPExchange.Cancellation] = []
    }

    /// GET is answered at once; POST reads its body (then 200 with the body's length); PUT streams it.
    struct Responder: HTTPResponder {
        let seen: Seen
        var account: BufferAccount? = nil

        func buffers(_ call: Void) -> BufferAccount? { account }

        func refused(_ call: Void, _ refusal: BufferAccount.Refusal) -> HTTPResponse {
            HTTPResponse(status: .tooManyRequests, body: ByteBuffer(string: "\(refusal)"))
        }

        func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Void> {
            switch head.method {
            case .POST: .readBody((), limit: 1 << 20)
            case .PUT: .stream((), limit: 1 << 20)
            default: .respond(HTTPResponse(status: .ok, body: ByteBuffer(string: "hello")))
            }
        }

        func respond(to call: Void, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
            -> Eventual<HTTPResponse>
        {
            seen.bodies.append(String(buffer: body))
            return .ready(.success(HTTPResponse(status: .ok, body: ByteBuffer(string: "\(body.readableBytes)"))))
        }

        func tooLarge(_ call: Void, declaredLength: Int?) -> HTTPResponse { HTTPResponse(status: .payloadTooLarge) }

        func abandon(_ call: Void) { seen.abandoned += 1 }

        func stream(_ call: Void, exchange: HTTPExchange) {
            let seen = seen
            exchange.whenCancelled { seen.cancellations.append($0) }
        }
    }

    struct Connection {
        let channel = EmbeddedChannel()
        let seen = Seen()

        init(
            _ timeouts: ConnectionTimeouts = ConnectionTimeouts(header: .seconds(10), progress: .seconds(10), idle: .seconds(300)),
            account: BufferAccount? = nil
        ) throws {
            try HTTPServer.configure(channel, responder: Responder(seen: seen, account: account), timeouts: timeouts)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
            channel.read()
        }

        func received() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        func advance(seconds: Int64) { channel.embeddedEventLoop.advanceTime(by: .seconds(seconds)) }
    }

    @Test("request headers sent too slowly (slowloris) get 408 after the header timeout, and the connection closes")
    func slowHeaders() throws {
        let connection = try Connection()
        try connection.send("GET /v1.0/state/s/k HTTP/1.1\r\nHost: a\r\n")
        connection.advance(seconds: 5)
        try connection.send("X-One: 1\r\n")
        connection.advance(seconds: 4)
        #expect(try connection.received().isEmpty)
        #expect(connection.channel.isActive)
        connection.advance(seconds: 2)
        let answer = try connection.received()
        #expect(answer.hasPrefix("HTTP/1.1 408"))
        #expect(answer.contains("connection: close"))
        #expect(answer.contains("request headers were not complete within 10 s"))
        #expect(!connection.channel.isActive)
    }

    @Test("a body that stops making progress gets 408 after the progress timeout; the responder abandons the call")
    func stalledBody() throws {
        let connection = try Connection()
        try connection.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\nabc")
        connection.advance(seconds: 6)
        // Progress (1 KiB, `--request-progress-bytes`) resets the clock.
        try connection.send(String(repeating: "d", count: 1100))
        connection.advance(seconds: 6)
        #expect(try connection.received().isEmpty)
        connection.advance(seconds: 5)
        let answer = try connection.received()
        #expect(answer.hasPrefix("HTTP/1.1 408"))
        #expect(answer.contains("request body made no progress for 10 s"))
        #expect(connection.seen.abandoned == 1)
        #expect(!connection.channel.isActive)
    }

    @Test("a body trickling fewer bytes than progressBytes gets 408 as if it had stopped")
    func trickledBody() throws {
        let connection = try Connection()
        try connection.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\nabc")
        // A byte every 3 s: never 10 s without a byte, but never 1 KiB either.
        var answer = ""
        for _ in 0..<5 where answer.isEmpty {
            connection.advance(seconds: 3)
            answer = try connection.received()
            if answer.isEmpty { try connection.send("x") }
        }
        #expect(answer.hasPrefix("HTTP/1.1 408"))
        #expect(answer.contains("request body made no progress for 10 s"))
        #expect(!connection.channel.isActive)
    }

    @Test("pipelined requests wait while the client does not read its answers, and are served once it does")
    func pipelinedBackpressure() throws {
        let connection = try Connection()
        try connection.send("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
        #expect(try connection.received().hasPrefix("HTTP/1.1 200"))
        // The client stops reading: the channel is no longer writable. Pipelined requests are read, not served.
        connection.channel.isWritable = false
        connection.channel.pipeline.fireChannelWritabilityChanged()
        try connection.send(
            "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nb"
                + "POST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nc")
        #expect(try connection.received().isEmpty)
        #expect(connection.seen.bodies == ["x"])
        // It reads again: both are answered, in order.
        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        let answers = try connection.received()
        #expect(answers.components(separatedBy: "HTTP/1.1 200").count == 3, "\(answers)")
        #expect(connection.seen.bodies == ["x", "b", "c"])
        #expect(connection.channel.isActive)
    }

    @Test("a streamed body that stops is cancelled and its connection closed")
    func stalledStream() throws {
        let connection = try Connection()
        // The exchange has taken everything read (nothing yet): the client owes the body.
        try connection.send("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n")
        connection.advance(seconds: 11)
        #expect(connection.seen.cancellations == [.closed])
        #expect(!connection.channel.isActive)
    }

    @Test("whole requests are served, keep-alive connections idle past the idle timeout are closed")
    func idle() throws {
        let connection = try Connection()
        try connection.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        #expect(try connection.received().hasPrefix("HTTP/1.1 200"))
        connection.advance(seconds: 200)
        try connection.send("GET /y HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(try connection.received().hasPrefix("HTTP/1.1 200"))
        connection.advance(seconds: 299)
        #expect(connection.channel.isActive)
        connection.advance(seconds: 2)
        #expect(!connection.channel.isActive)
        #expect(try connection.received().isEmpty, "an idle close writes nothing")
    }

    @Test("with the timeouts off, a slow client is waited for")
    func off() throws {
        let connection = try Connection(.none)
        try connection.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc")
        connection.advance(seconds: 3600)
        #expect(connection.channel.isActive)
        #expect(try connection.received().isEmpty)
    }

    @Test("a body held across reads counts against the tenant's maxBufferedBytes: past it, refused and closed; given back after")
    func bufferedBody() throws {
        let registry = TenantRegistry(
            configuration: NodeConfiguration(
                tenants: [
                    TenantSpec(
                        namespace: "team-a", apps: [AppSpec(appId: "orders")], quotas: Quotas(maxBufferedBytes: 3_000))
                ],
                components: []),
            maxRequestBytes: 1 << 20, buffers: BufferBudget(limit: 1 << 20))
        let account = try #require(registry.tenantAccount("team-a")?.buffers)
        let fits = try Connection(account: account)
        try fits.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n" + String(repeating: "a", count: 1500))
        #expect(account.usedBytes == 1500)
        try fits.send(String(repeating: "a", count: 500))
        #expect(try fits.received().hasPrefix("HTTP/1.1 200"))
        #expect(account.usedBytes == 0)

        let over = try Connection(account: account)
        try over.send("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + String(repeating: "b", count: 2500))
        try over.send(String(repeating: "b", count: 1000))
        let answer = try over.received()
        #expect(answer.hasPrefix("HTTP/1.1 429"))
        #expect(answer.contains("tenant(limit: 3000)"))
        #expect(account.usedBytes == 0)
        #expect(!over.channel.isActive)
    }
}
