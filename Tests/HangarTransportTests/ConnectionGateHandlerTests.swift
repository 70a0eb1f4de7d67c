import NIOCore
import NIOEmbedded
import Testing

@testable import HangarTransport
import HangarSync

/// A gatekeeper decided by the test: it answers when `decide` is called.
private final class ManualGatekeeper: ConnectionGatekeeper, Sendable {
    private let promise = Locked<EventLoopPromise<Bool>?>(nil)

    func admit(_ channel: any Channel) -> EventLoopFuture<Bool> {
        let promise = channel.eventLoop.makePromise(of: Bool.self)
        self.promise.withLock { $0 = promise }
        return promise.futureResult
    }

    func decide(_ admitted: Bool) {
        promise.withLock { $0 }?.succeed(admitted)
    }
}

/// Records what reaches the front-end's handlers behind the gate.
private final class Recorder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var active = false
    var reads: [String] = []
    var readCompletes = 0

    func channelActive(context: ChannelHandlerContext) { active = true }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reads.append(String(buffer: unwrapInboundIn(data)))
    }
    func channelReadComplete(context: ChannelHandlerContext) { readCompletes += 1 }
}

@Suite("ConnectionGateHandler")
struct ConnectionGateHandlerTests {
    private func connection() throws -> (EmbeddedChannel, ManualGatekeeper, Recorder) {
        let gatekeeper = ManualGatekeeper()
        let recorder = Recorder()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ConnectionGateHandler(gatekeeper: gatekeeper))
        try channel.pipeline.syncOperations.addHandler(recorder)
        return (channel, gatekeeper, recorder)
    }

    @Test("bytes read before the decision reach the front-end, in order, once the connection is admitted")
    func admittedAfterReads() throws {
        let (channel, gatekeeper, recorder) = try connection()
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/gate-test")).wait()
        try channel.writeInbound(ByteBuffer(string: "PRI "))
        try channel.writeInbound(ByteBuffer(string: "* HTTP/2.0"))
        #expect(!recorder.active)
        #expect(recorder.reads.isEmpty)
        gatekeeper.decide(true)
        #expect(recorder.active)
        #expect(recorder.reads == ["PRI ", "* HTTP/2.0"])
        #expect(recorder.readCompletes == 1)
        // The gate has left the pipeline: later bytes go straight through.
        #expect(throws: (any Error).self) {
            try channel.pipeline.syncOperations.handler(type: ConnectionGateHandler.self)
        }
        try channel.writeInbound(ByteBuffer(string: "later"))
        #expect(recorder.reads.last == "later")
        _ = try channel.finish()
    }

    @Test("a refused connection is closed and nothing of it reaches the front-end")
    func refused() throws {
        let (channel, gatekeeper, recorder) = try connection()
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/gate-test")).wait()
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\n\r\n"))
        gatekeeper.decide(false)
        #expect(!channel.isActive)
        #expect(!recorder.active)
        #expect(recorder.reads.isEmpty)
    }

    @Test("a connection that closes while the gatekeeper decides is never activated behind the gate")
    func closedWhileDeciding() throws {
        let (channel, gatekeeper, recorder) = try connection()
        try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/gate-test")).wait()
        try channel.writeInbound(ByteBuffer(string: "PRI "))
        try channel.close().wait()
        // Admitted after the peer went: activating the front-end now would arm its timers on a dead connection
        // (a gRPC connection's keepalive holds it for 2 hours), for every connection that closes this early.
        gatekeeper.decide(true)
        #expect(!recorder.active)
        #expect(recorder.reads.isEmpty)
    }
}
