import Foundation
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// The node's shared client of one Redis server, against a real redis-server: few pipelined connections for many
/// callers, fast failures while the server is down, and service again once it is back, without a restart.
@Suite("Redis client", .serialized)
struct RedisClientTests {
    let group = MultiThreadedEventLoopGroup.singleton

    func soon() -> NIODeadline { .now() + .seconds(5) }

    /// The connections the server has from clients named `name`.
    func connections(named name: String, on server: RedisServer) async throws -> Int {
        let admin = try await RedisConnection.connect(
            RedisConfiguration(address: server.address, clientName: "test-admin"), on: group.next()
        ).get()
        defer { _ = admin.close() }
        let list = try await admin.send(["CLIENT", "LIST"], deadline: soon()).get().string ?? ""
        return list.split(separator: "\n").filter { $0.contains(" name=\(name) ") }.count
    }

    @Test("2,000 concurrent callers share at most maxConnections pipelined connections, each getting its own reply")
    func sharedConnections() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var options = RedisClient.Options()
        options.maxConnections = 3
        let client = RedisClient(
            RedisConfiguration(address: server.address, clientName: "shared"), options: options, group: group)
        defer { _ = client.close() }
        let replies = try await withThrowingTaskGroup(of: (Int, String?).self) { tasks in
            for index in 0..<2_000 {
                tasks.addTask {
                    _ = try await client.send(["SET", .string("k\(index)"), .string("v\(index)")], deadline: soon())
                        .get()
                    return (index, try await client.send(["GET", .string("k\(index)")], deadline: soon()).get().string)
                }
            }
            var all: [Int: String?] = [:]
            for try await (index, value) in tasks { all[index] = value }
            return all
        }
        #expect(replies.count == 2_000 && replies.allSatisfy { $0.value == "v\($0.key)" })
        let open = try await connections(named: "shared", on: server)
        #expect(open >= 1 && open <= 3, "\(open) connections")
        #expect(client.connectionCount == open)
    }

    @Test("while the server is down commands fail fast with a clear error; once it is back they succeed again")
    func outage() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let client = RedisClient(RedisConfiguration(address: server.address), group: group)
        defer { _ = client.close() }
        #expect(try await client.send(["PING"], deadline: soon()).get().string == "PONG")

        server.crash()
        // Every command fails (the first ones with the closed connection, then with the refused reconnection),
        // none hangs until its deadline.
        for _ in 0..<20 {
            let error = await #expect(throws: RedisError.self) {
                try await client.send(["PING"], deadline: .now() + .seconds(30)).get()
            }
            guard case .connectionClosed? = error else {
                Issue.record("not connectionClosed: \(String(describing: error))")
                break
            }
        }

        try server.restart()
        // Served again after the backoff (at most 2 s and its jitter): asked for up to 10 s.
        let deadline = Date().addingTimeInterval(10)
        var answer: String?
        while answer == nil, Date() < deadline {
            answer = try? await client.send(["PING"], deadline: soon()).get().string
            if answer == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(answer == "PONG")
    }

    @Test("a closed client fails every command at once")
    func closed() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let client = RedisClient(RedisConfiguration(address: server.address), group: group)
        #expect(try await client.send(["PING"], deadline: soon()).get().string == "PONG")
        try await client.close().get()
        await #expect(throws: RedisError.connectionClosed("the client is closed")) {
            try await client.send(["PING"], deadline: soon()).get()
        }
        #expect(client.connectionCount == 0)
    }

    @Test("a command already past its deadline fails alone; the connection stays open for the others")
    func expiredDeadline() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await RedisConnection.connect(
            RedisConfiguration(address: server.address), on: group.next()
        ).get()
        defer { _ = connection.close() }
        await #expect(throws: RedisError.deadlineExceeded) {
            try await connection.send(["PING"], deadline: .now() - .seconds(1)).get()
        }
        #expect(connection.isActive)
        #expect(try await connection.send(["PING"], deadline: soon()).get().string == "PONG")
    }
}
