import Foundation
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// The programs tests start (`TestProcess`: the servers, `psql`, `openssl`) get none of the test process's
/// sockets. SwiftNIO opens them without close-on-exec: a child that inherited one kept a `pubsub.redis` blocking
/// connection open on its server after the component had closed it (the shared PostgreSQL server, started by
/// another suite while it was open, lives until the test process ends).
@Suite("test processes")
struct TestProcessTests {
    @Test("a connection open while a test starts a child process closes for its server when the test closes it")
    func childrenDoNotHoldConnections() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let name = "inherit-\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: name), on: loop
        ).get()
        // A child that outlives the check, started while the connection is open.
        let child = try TestProcess.spawn(["/bin/sleep", "30"])
        defer {
            kill(child, SIGKILL)
            waitpid(child, nil, 0)
        }
        try await connection.close().get()

        let admin = try await RedisConnection.connect(RedisConfiguration(testing: server), on: loop).get()
        defer { _ = admin.close() }
        var open = true
        for _ in 0..<60 where open {
            let list = try await admin.send(["CLIENT", "LIST"], deadline: .now() + .seconds(5)).get().string ?? ""
            open = list.contains(" name=\(name) ")
            if open { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(!open, "the server still has the connection: the child holds a copy of its socket")
    }
}
