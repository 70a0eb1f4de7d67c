import Foundation
import HangarComponents
import Logging
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

    /// A bound for replies, not a timing assertion: generous, as the whole suite runs at once on two cores in CI.
    func soon() -> NIODeadline { .now() + .seconds(20) }

    /// The connections the server has from clients named `name`.
    func connections(named name: String, on server: RedisServer) async throws -> Int {
        let admin = try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: "test-admin"), on: group.next()
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
            RedisConfiguration(testing: server, clientName: "shared"), options: options, group: group)
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
        let client = RedisClient(RedisConfiguration(testing: server), group: group)
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
        let client = RedisClient(RedisConfiguration(testing: server), group: group)
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
            RedisConfiguration(testing: server), on: group.next()
        ).get()
        defer { _ = connection.close() }
        await #expect(throws: RedisError.deadlineExceeded) {
            try await connection.send(["PING"], deadline: .now() - .seconds(1)).get()
        }
        #expect(connection.isActive)
        #expect(try await connection.send(["PING"], deadline: soon()).get().string == "PONG")
    }

    @Test(
        "connections opened beyond one per event loop close once idle for idleTimeout; the first stays, busy ones too"
    )
    func idleConnections() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        // One event loop, so that exactly one connection is kept.
        let loop = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var settings = RedisStateStore.Settings(
            configuration: .init(address: server.address, clientName: "idle"), healthCheckInterval: .seconds(60))
        settings.options.maxConnections = 3
        // A pipeline of one: a command finding every connection busy opens another.
        settings.options.pipelineDepth = 1
        settings.options.idleTimeout = .milliseconds(400)
        let store = try RedisStateStore(
            settings: settings, group: loop, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        let client = store.client
        #expect(store.backendConnections == 1)

        // Commands that block their connection until they are released, sent until three connections are open.
        var blocked: [EventLoopFuture<RESPValue>] = []
        let start = Date()
        while client.connectionCount < 3, Date() < start.addingTimeInterval(5) {
            blocked.append(
                client.send(["BLPOP", .string("never-\(blocked.count)"), "0"], deadline: .now() + .seconds(20)))
            try await Task.sleep(for: .milliseconds(30))
        }
        // The last one opened has none yet: one more goes to it (the least busy).
        blocked.append(client.send(["BLPOP", .string("never-\(blocked.count)"), "0"], deadline: .now() + .seconds(20)))
        #expect(try await connections(named: "idle", on: server) == 3)
        // The gauge hangar_component_pool_connections reads the store's backendConnections.
        #expect(store.backendConnections == 3)

        // Busy connections are not idle: blocked for longer than the idle timeout, all three stay open.
        try await Task.sleep(for: .seconds(1))
        #expect(try await connections(named: "idle", on: server) == 3)
        #expect(store.backendConnections == 3)

        // Released at once: each gets its reply.
        let admin = try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: "test-admin"), on: group.next()
        ).get()
        // No blocked command can be answered before this instant: the idle clock of each connection starts after it.
        let released = Date()
        for index in blocked.indices {
            _ = try await admin.send(["LPUSH", .string("never-\(index)"), "x"], deadline: soon()).get()
        }
        _ = admin.close()
        let replied = Date()
        for (index, future) in blocked.enumerated() {
            #expect(try await future.get().elements?.compactMap(\.string) == ["never-\(index)", "x"])
        }

        // Then the two extra connections close, no sooner than the idle timeout after the last reply.
        var open = 3
        while open > 1, Date() < replied.addingTimeInterval(5) {
            try await Task.sleep(for: .milliseconds(50))
            open = try await connections(named: "idle", on: server)
        }
        let fell = Date().timeIntervalSince(released)
        #expect(open == 1, "\(open) connections \(fell) s after the commands were released")
        #expect(fell >= 0.35, "closed \(fell) s after the commands were released, before the 0.4 s idle timeout")
        #expect(client.connectionCount == 1 && store.backendConnections == 1)

        // The first connection stays, idle or not, and serves.
        try await Task.sleep(for: .seconds(1))
        #expect(try await connections(named: "idle", on: server) == 1)
        #expect(try await client.send(["PING"], deadline: soon()).get().string == "PONG")
        #expect(client.connectionCount == 1)

        try await store.close(on: loop.next()).get()
        try await loop.shutdownGracefully()
    }

    @Test("a command with an earlier deadline behind a later one fails at its own deadline")
    func earlierDeadlineBehind() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let connection = try await RedisConnection.connect(
            RedisConfiguration(testing: server), on: group.next()
        ).get()
        defer { _ = connection.close() }
        let started = Date()
        let blocked = connection.send(["BLPOP", "never", "5"], deadline: .now() + .seconds(10))
        let behind = connection.send(["PING"], deadline: .now() + .milliseconds(200))
        await #expect(throws: RedisError.deadlineExceeded) { try await behind.get() }
        await #expect(throws: RedisError.deadlineExceeded) { try await blocked.get() }
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed >= 0.15 && elapsed < 2, "failed after \(elapsed) s")
        #expect(!connection.isActive)
    }

    @Test("idleTimeout metadata: a duration, or -1 / 0 for never; 30 s by default; a bad one is refused by name")
    func idleTimeoutMetadata() throws {
        let base = ["redisHost": "localhost:6379"]
        #expect(try RedisMetadata(base, clientName: "t").options.idleTimeout == .seconds(30))
        #expect(
            try RedisMetadata(base.merging(["idleTimeout": "5m"]) { $1 }, clientName: "t").options.idleTimeout
                == .seconds(300))
        #expect(
            try RedisMetadata(base.merging(["idleTimeout": "1500"]) { $1 }, clientName: "t").options.idleTimeout
                == .milliseconds(1500))
        for never in ["-1", "0"] {
            #expect(
                try RedisMetadata(base.merging(["idleTimeout": never]) { $1 }, clientName: "t").options.idleTimeout
                    == nil)
        }
        let error = #expect(throws: ComponentDefinitionError.self) {
            try RedisMetadata(base.merging(["idleTimeout": "soon"]) { $1 }, clientName: "t")
        }
        #expect(error?.field == "spec.metadata.idleTimeout")
    }
}
