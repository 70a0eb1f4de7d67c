import Foundation
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// Connections for blocking commands, and the order of a key's commands across the shared client's connections,
/// against a real redis-server.
@Suite("Redis dedicated connections and ordered commands", .serialized)
struct RedisDedicatedConnectionTests {
    let group = MultiThreadedEventLoopGroup.singleton

    @Test(
        "a blocking command runs for its own deadline, CLIENT UNBLOCK ends it early, and it reconnects after a restart")
    func blocking() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = RedisDedicatedConnection(RedisConfiguration(testing: server), on: group.next())
        defer { _ = connection.close() }
        let client = RedisClient(RedisConfiguration(testing: server), group: group)
        defer { _ = client.close() }

        // Longer than the client's usual second: the deadline is the command's own.
        let start = ContinuousClock.now
        let reply = try await connection.send(["BLPOP", "nothing", "1.5"], deadline: .now() + .seconds(4)).get()
        #expect(reply == .null)
        #expect(ContinuousClock.now - start >= .milliseconds(1400))

        let id = try #require(connection.clientID)
        let blocked = connection.send(["BLPOP", "nothing", "30"], deadline: .now() + .seconds(35))
        let unblockedAt = ContinuousClock.now
        var unblocked = false
        for _ in 0..<100 where !unblocked {
            let answer = try await client.send(["CLIENT", "UNBLOCK", .integer(id)], deadline: .now() + .seconds(1))
                .get()
            unblocked = answer == .integer(1)
            if !unblocked { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(unblocked)
        #expect(try await blocked.get() == .null)
        #expect(ContinuousClock.now - unblockedAt < .seconds(5))

        server.crash()
        await #expect(throws: RedisError.self) {
            try await connection.send(["PING"], deadline: .now() + .seconds(1)).get()
        }
        try server.restart()
        var back = false
        for _ in 0..<60 where !back {
            back = (try? await connection.send(["PING"], deadline: .now() + .seconds(1)).get()) != nil
            if !back { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(back, "a new connection once the server is back")
    }

    @Test("commands with the same order key run in the order they were sent, across several connections")
    func orderedBy() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var options = RedisClient.Options()
        options.maxConnections = 4
        options.pipelineDepth = 2
        let client = RedisClient(RedisConfiguration(testing: server), options: options, group: group)
        defer { _ = client.close() }
        // Fired without waiting, from one caller, while other keys load the connections.
        let futures = (0..<2_000).flatMap { index in
            [
                client.send(
                    ["RPUSH", "ordered", .integer(Int64(index))], deadline: .now() + .seconds(5),
                    orderedBy: "ordered"),
                client.send(["INCR", .string("noise\(index % 7)")], deadline: .now() + .seconds(5)),
            ]
        }
        for future in futures { _ = try await future.get() }
        #expect(client.connectionCount > 1, "the load used several connections")
        let list = try await client.send(["LRANGE", "ordered", "0", "-1"], deadline: .now() + .seconds(5)).get()
        #expect(list.elements?.compactMap(\.string) == (0..<2_000).map(String.init))
    }
}
