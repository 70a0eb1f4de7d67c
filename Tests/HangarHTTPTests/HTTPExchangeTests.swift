import HangarComponents
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import HangarHTTP

/// Streamed requests (`HTTPStart.stream`) on the real HTTP/1.1 pipeline (`HTTPServer.configure`: NIOHTTP1's decoder
/// and encoder, then `HTTPConnectionHandler`), on an EmbeddedChannel: the test plays the responder through the
/// request's `HTTPExchange`, and counts the reads the connection asks of the socket.
@Suite("HTTP exchanges (streamed requests and responses)")
struct HTTPExchangeTests {
    /// What the responder saw, touched only on the test's thread (the EmbeddedEventLoop's).
    final class Seen: @unchecked Sendable {
        var exchanges: [HTTPExchange] = []
        var cancellations: [HTTPExchange.Cancellation] = []
        /// Answers a `.tooLarge` exchange with 413, as a responder would.
        var answerTooLarge = true
    }

    /// Streams every request, with a body limit of `limit` bytes, and hands its exchange to the test.
    struct TestResponder: HTTPResponder {
        let limit: Int
        let seen: Seen

        func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Void> {
            .stream((), limit: limit)
        }

        func respond(to call: Void, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
            -> Eventual<HTTPResponse>
        {
            .failure(TestError())
        }

        func tooLarge(_ call: Void, declaredLength: Int?) -> HTTPResponse {
            HTTPResponse(status: .payloadTooLarge)
        }

        func abandon(_ call: Void) {}

        func stream(_ call: Void, exchange: HTTPExchange) {
            let seen = seen
            seen.exchanges.append(exchange)
            exchange.whenCancelled { reason in
                seen.cancellations.append(reason)
                if reason == .tooLarge, seen.answerTooLarge {
                    exchange.respond(HTTPResponse(status: .payloadTooLarge, body: ByteBuffer(string: "too large")))
                }
            }
        }
    }

    struct TestError: Error {}

    /// Counts the reads that reach the socket (it sits next to the channel's head).
    final class ReadCounter: ChannelOutboundHandler, @unchecked Sendable {  // used on the test's thread only
        typealias OutboundIn = Any
        var reads = 0

        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    struct Connection {
        let channel: EmbeddedChannel
        let reads: ReadCounter
        let seen: Seen

        init(limit: Int = 1 << 20) throws {
            channel = EmbeddedChannel()
            reads = ReadCounter()
            seen = Seen()
            try channel.pipeline.syncOperations.addHandler(reads)
            try HTTPServer.configure(channel, responder: TestResponder(limit: limit, seen: seen))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        /// Bytes from the caller, then the read NIO asks for after each read burst (`autoRead`).
        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
            channel.read()
        }

        /// Everything written to the caller since the last call.
        func received() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        var exchange: HTTPExchange { seen.exchanges.last! }
    }

    /// Holds a future's result; filled on the test's thread (the EmbeddedEventLoop runs callbacks inline).
    final class Outcome<T>: @unchecked Sendable {
        var result: Result<T, any Error>?
    }

    /// The value of a future that has completed, nil while it is pending.
    func value<T>(_ future: EventLoopFuture<T>) -> Result<T, any Error>? {
        let outcome = Outcome<T>()
        future.whenComplete { outcome.result = $0 }
        return outcome.result
    }

    @Test("the body is read from the socket only as fast as the responder takes it")
    func backpressureOnTheRequest() throws {
        let connection = try Connection()
        try connection.send("POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        let readsBefore = connection.reads.reads
        connection.channel.read()  // a part waits: the socket is not read
        #expect(connection.reads.reads == readsBefore)
        #expect(connection.exchange.hasBody && connection.exchange.declaredLength == nil)

        let first = value(connection.exchange.nextBodyPart())
        #expect(try first?.get().map { String(buffer: $0) } == "abc")
        #expect(connection.reads.reads == readsBefore + 1)  // taken: the deferred read goes out

        let second = connection.exchange.nextBodyPart()
        #expect(value(second) == nil)
        try connection.send("2\r\nde\r\n0\r\n\r\n")
        #expect(try value(second)?.get().map { String(buffer: $0) } == "de")
        #expect(try value(connection.exchange.nextBodyPart())?.get() == .some(nil))
    }

    @Test("a response without a length is written chunked, part by part, and the connection serves the next request")
    func chunkedResponse() throws {
        let connection = try Connection()
        try connection.send("GET /down HTTP/1.1\r\nhost: a\r\n\r\n")
        let exchange = connection.exchange
        #expect(!exchange.hasBody)
        exchange.writeHead(status: .ok, headers: ["content-type": "text/plain"])
        #expect(try value(exchange.writeBodyPart(ByteBuffer(string: "hello ")))?.get() != nil)
        #expect(try value(exchange.writeBodyPart(ByteBuffer(string: "world")))?.get() != nil)
        exchange.end()
        let text = try connection.received()
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.lowercased().contains("transfer-encoding: chunked"))
        #expect(text.hasSuffix("\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"))

        try connection.send("GET /again HTTP/1.1\r\nhost: a\r\n\r\n")
        #expect(connection.seen.exchanges.count == 2)
        connection.exchange.respond(HTTPResponse(status: .noContent))
        #expect(try connection.received().hasPrefix("HTTP/1.1 204 No Content\r\n"))
        #expect(connection.channel.isActive)
    }

    @Test("a response part's future completes only once the socket can take more")
    func backpressureOnTheResponse() throws {
        let connection = try Connection()
        try connection.send("GET /down HTTP/1.1\r\nhost: a\r\n\r\n")
        let exchange = connection.exchange
        exchange.writeHead(status: .ok, headers: ["content-length": "4"])
        connection.channel.isWritable = false
        let part = exchange.writeBodyPart(ByteBuffer(string: "ab"))
        #expect(value(part) == nil)
        connection.channel.isWritable = true
        connection.channel.pipeline.fireChannelWritabilityChanged()
        #expect(try value(part)?.get() != nil)
        _ = exchange.writeBodyPart(ByteBuffer(string: "cd"))
        exchange.end()
        let text = try connection.received()
        #expect(text.contains("content-length: 4\r\n") && text.hasSuffix("\r\n\r\nabcd"))
    }

    @Test("a body over the limit is answered by the responder, and the connection closes")
    func overTheLimit() throws {
        let connection = try Connection(limit: 4)
        try connection.send("POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        let exchange = connection.exchange
        #expect(try value(exchange.nextBodyPart())?.get() != nil)
        let pending = exchange.nextBodyPart()
        try connection.send("3\r\ndef\r\n")
        #expect(connection.seen.cancellations == [.tooLarge])
        guard case .failure(HTTPExchange.Cancellation.tooLarge)? = value(pending) else {
            Issue.record("the pending part did not fail with tooLarge")
            return
        }
        let text = try connection.received()
        #expect(text.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"))
        #expect(text.contains("connection: close"))
        #expect(!connection.channel.isActive)
    }

    @Test("a declared length over the limit is refused before the exchange starts")
    func declaredOverTheLimit() throws {
        let connection = try Connection(limit: 4)
        try connection.send("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\n")
        #expect(connection.seen.exchanges.isEmpty)
        #expect(try connection.received().hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"))
    }

    @Test("the caller going away cuts the exchange short: pending parts fail and nothing more is written")
    func callerGoesAway() throws {
        let connection = try Connection()
        try connection.send("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nabc")
        let exchange = connection.exchange
        _ = value(exchange.nextBodyPart())
        let pending = exchange.nextBodyPart()
        exchange.writeHead(status: .ok, headers: [:])
        _ = try connection.received()
        try connection.channel.close().wait()
        #expect(connection.seen.cancellations == [.closed])
        guard case .failure(HTTPExchange.Cancellation.closed)? = value(pending) else {
            Issue.record("the pending part did not fail with closed")
            return
        }
        guard case .failure? = value(exchange.writeBodyPart(ByteBuffer(string: "x"))) else {
            Issue.record("a write after the close did not fail")
            return
        }
    }

    @Test("a request that expects 100-continue gets it when its body is first asked for")
    func expectContinue() throws {
        let connection = try Connection()
        try connection.send("PUT /up HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n")
        #expect(try connection.received().isEmpty)
        let part = connection.exchange.nextBodyPart()
        #expect(try connection.received() == "HTTP/1.1 100 Continue\r\n\r\n")
        try connection.send("ok")
        #expect(try value(part)?.get().map { String(buffer: $0) } == "ok")
    }

    @Test("a pipelined request waits until the streamed response ends")
    func pipelining() throws {
        let connection = try Connection()
        try connection.send("GET /a HTTP/1.1\r\nhost: a\r\n\r\nGET /b HTTP/1.1\r\nhost: a\r\n\r\n")
        #expect(connection.seen.exchanges.count == 1)
        connection.exchange.writeHead(status: .ok, headers: ["content-length": "1"])
        _ = connection.exchange.writeBodyPart(ByteBuffer(string: "a"))
        #expect(connection.seen.exchanges.count == 1)
        connection.exchange.end()
        #expect(connection.seen.exchanges.count == 2)
        #expect(connection.exchange.head.uri == "/b")
    }

    @Test("an answer before the body was read drops the rest of the body and keeps the connection")
    func earlyAnswer() throws {
        let connection = try Connection()
        try connection.send("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 6\r\n\r\nabc")
        connection.exchange.respond(HTTPResponse(status: .notFound))
        #expect(try connection.received().hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        try connection.send("defGET /next HTTP/1.1\r\nhost: a\r\n\r\n")
        #expect(connection.seen.exchanges.count == 2)
        #expect(connection.exchange.head.uri == "/next")
    }
}
