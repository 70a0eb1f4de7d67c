import Foundation
import HangarComponents
import HangarTestSupport
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRedis

/// What `state.redis` adds to the state conformance suite (which runs it too): data shared with Dapr's own Redis
/// store, outages, the node's connection count, and its metadata.
@Suite("state.redis", .serialized)
struct RedisStateStoreTests {
    let group = MultiThreadedEventLoopGroup.singleton
    let logger = Logger(label: "hangar.tests.redis-state") { _ in SwiftLogNoOpLogHandler() }

    func open(_ server: RedisServer, keyLayout: StateKeyLayout = .hangar, poolSize: Int = 8) throws -> RedisStateStore {
        // A 20 s command deadline rather than the 3 s default: behaviour, not speed, on two loaded cores in CI (a
        // server that is down fails a command at once whatever its deadline).
        var settings = RedisStateStore.Settings(
            configuration: .init(address: server.address, clientName: "state-test"), commandTimeout: .seconds(20),
            keyLayout: keyLayout, healthCheckInterval: .milliseconds(200))
        settings.options.maxConnections = poolSize
        return try RedisStateStore(settings: settings, group: group, logger: logger)
    }

    func admin(_ server: RedisServer) async throws -> RedisConnection {
        try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: "test-admin"), on: group.next()
        ).get()
    }

    func command(_ connection: RedisConnection, _ arguments: [RESPArgument]) async throws -> RESPValue {
        try await connection.send(arguments, deadline: .now() + .seconds(20)).get()
    }

    /// Dapr's own set script (components-contrib `state/redis/redis.go`, `setDefaultQuery`; `Tests/dapr`), run as
    /// Dapr runs it: `EVAL script 1 key etag-or-0 value first-write-flag`.
    static let daprSetScript: String = {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("dapr/state-redis-set.lua")
        do {
            return try String(contentsOf: path, encoding: .utf8)
        } catch {
            fatalError("cannot read Dapr's set script at \(path.path): \(error)")
        }
    }()

    @Test("with keyLayout dapr, items Dapr wrote under appId||key are read and updated in place, and Dapr reads ours")
    func daprLayout() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let redis = try await admin(server)
        defer { _ = redis.close() }
        // Dapr's sidecar for app "orders" saved "cart" twice.
        for value in ["v1", "v2"] {
            _ = try await command(redis, ["EVAL", .string(Self.daprSetScript), "1", "orders||cart", "0", .string(value), "1"])
        }

        let store = try open(server, keyLayout: .dapr)
        defer { _ = store.close(on: group.next()) }
        let loop = group.next()
        // The runtime's physical key for app "orders" of tenant "shop": the namespace is dropped.
        let entry = try #require(try await store.get("shop||orders||cart", on: loop).get())
        #expect(entry.value == Data("v2".utf8))
        #expect(entry.etag == "2")
        try await store.set(
            StateSetRequest(key: "shop||orders||cart", value: Data("v3".utf8), etag: entry.etag), on: loop
        ).get()
        await #expect(throws: StateStoreError.etagMismatch(key: "shop||orders||cart")) {
            try await store.set(
                StateSetRequest(key: "shop||orders||cart", value: Data("stale".utf8), etag: "2"), on: loop
            ).get()
        }

        // Dapr reads it (HGETALL data and version) and writes it with the ETag it read.
        let hash = try await command(redis, ["HGETALL", "orders||cart"])
        let fields = Dictionary(
            uniqueKeysWithValues: stride(from: 0, to: hash.elements!.count, by: 2).map {
                (hash.elements![$0].string!, hash.elements![$0 + 1].string!)
            })
        #expect(fields == ["data": "v3", "version": "3"])
        _ = try await command(redis, ["EVAL", .string(Self.daprSetScript), "1", "orders||cart", "3", "v4", "1"])
        #expect(try await store.get("shop||orders||cart", on: loop).get()?.value == Data("v4".utf8))

        // The default layout keeps the namespace: the same app key is another item.
        let shared = try open(server)
        defer { _ = shared.close(on: group.next()) }
        #expect(try await shared.get("shop||orders||cart", on: loop).get() == nil)
        try await shared.set(StateSetRequest(key: "shop||orders||cart", value: Data("x".utf8)), on: loop).get()
        #expect(try await command(redis, ["EXISTS", "shop||orders||cart"]) == .integer(1))
    }

    @Test("byte counts live in Redis: two nodes share one limit, a reopened store reads them, foreign data never counts below zero")
    func sharedByteAccounting() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let first = try open(server)
        let second = try open(server)
        defer {
            _ = first.close(on: group.next())
            _ = second.close(on: group.next())
        }
        // Two nodes write one tenant at once; every item is 9 + 11 = 20 bytes, so exactly 50 fit in 1000.
        let written = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for writer in 0..<8 {
                let store = writer % 2 == 0 ? first : second
                let loop = group.next()
                tasks.addTask {
                    var written = 0
                    for index in 100..<120 {
                        do {
                            try await store.set(
                                StateSetRequest(
                                    key: "c||t\(writer)i\(index)", value: Data("hello world".utf8), byteLimit: 1000),
                                on: loop
                            ).get()
                            written += 1
                        } catch StateStoreError.byteLimitExceeded(let partition, let usage, let limit) {
                            #expect(partition == "c" && usage == 1020 && limit == 1000)
                        }
                    }
                    return written
                }
            }
            return try await tasks.reduce(0, +)
        }
        #expect(written == 50)
        let loop = group.next()
        // Each node knows what its own last write answered; a refresh reads the shared total.
        _ = try await first.purgeExpired(on: loop).get()
        #expect(first.usageByPartition == ["c": 1000])

        let reopened = try open(server)
        defer { _ = reopened.close(on: group.next()) }
        #expect(reopened.usageByPartition == ["c": 1000], "read when the store opens")

        // Data Dapr wrote (never counted): replacing it counts only the difference, and deleting it leaves zero,
        // not a negative total.
        let redis = try await admin(server)
        defer { _ = redis.close() }
        _ = try await command(redis, ["EVAL", .string(Self.daprSetScript), "1", "orders||cart", "0", "v2", "1"])
        let dapr = try open(server, keyLayout: .dapr)
        defer { _ = dapr.close(on: group.next()) }
        try await dapr.set(StateSetRequest(key: "shop||orders||cart", value: Data("v3333".utf8)), on: loop).get()
        #expect(dapr.usageByPartition["shop"] == 3)  // (18 + 5) - (18 + 2)
        try await dapr.delete(StateDeleteRequest(key: "shop||orders||cart"), on: loop).get()
        #expect(dapr.usageByPartition["shop"] == nil)
        #expect(try await command(redis, ["HGET", "hangar:state:bytes:shop", "bytes"]).string == "0")
        #expect(try await command(redis, ["SISMEMBER", "hangar:state:partitions", "shop"]) == .integer(0))
        #expect(dapr.usageByPartition["c"] == 1000)
    }

    @Test("a value stored as a plain string (Dapr's legacy fallback) reads without an ETag and is overwritten as a hash")
    func plainStringFallback() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let redis = try await admin(server)
        defer { _ = redis.close() }
        _ = try await command(redis, ["SET", "legacy", "plain"])
        let store = try open(server)
        defer { _ = store.close(on: group.next()) }
        let loop = group.next()
        #expect(try await store.get("legacy", on: loop).get() == StateEntry(value: Data("plain".utf8), etag: ""))
        try await store.set(StateSetRequest(key: "legacy", value: Data("hashed".utf8)), on: loop).get()
        #expect(try await store.get("legacy", on: loop).get() == StateEntry(value: Data("hashed".utf8), etag: "1"))
    }

    @Test("while the server is down every call fails fast as unavailable, the store reports why, and it recovers")
    func outage() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let store = try open(server)
        defer { _ = store.close(on: group.next()) }
        let loop = group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("before".utf8)), on: loop).get()
        #expect(store.backendProblem == nil)

        server.crash()
        // Noticed without any call, by the health check.
        let noticed = Date()
        while store.backendProblem == nil, Date().timeIntervalSince(noticed) < 5 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(store.backendProblem != nil)
        for _ in 0..<20 {
            let started = Date()
            do {
                _ = try await store.get("k", on: loop).get()
                Issue.record("a read succeeded while the server was down")
            } catch let error as StateStoreError {
                guard case .unavailable = error else {
                    Issue.record("expected unavailable, got \(error)")
                    continue
                }
            }
            // Fast: refused at once, not after the 20 s command deadline of these tests (a bound far from it, as the
            // machine may be loaded).
            #expect(Date().timeIntervalSince(started) < 5, "each call fails fast")
        }
        await #expect(throws: StateStoreError.self) {
            try await store.set(StateSetRequest(key: "k", value: Data("during".utf8)), on: loop).get()
        }

        try server.restart()
        let restarted = Date()
        var recovered = false
        while !recovered, Date().timeIntervalSince(restarted) < 5 {
            recovered = (try? await store.set(StateSetRequest(key: "k", value: Data("after".utf8)), on: loop).get()) != nil
            if !recovered { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(recovered, "a call succeeds within 5 s of the server's return, with no restart of the store")
        #expect(try await store.get("k", on: loop).get()?.value == Data("after".utf8))
        // The health report follows at the next health check.
        while store.backendProblem != nil, Date().timeIntervalSince(restarted) < 5 {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(store.backendProblem == nil)
    }

    @Test("800 concurrent calls from every event loop use at most poolSize connections")
    func boundedConnections() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let store = try open(server, poolSize: 4)
        defer { _ = store.close(on: group.next()) }
        let group = self.group
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for index in 0..<800 {
                tasks.addTask {
                    let loop = group.next()
                    try await store.set(StateSetRequest(key: "k\(index % 50)", value: Data("\(index)".utf8)), on: loop)
                        .get()
                    _ = try await store.get("k\(index % 50)", on: loop).get()
                }
            }
            try await tasks.waitForAll()
        }
        let redis = try await admin(server)
        defer { _ = redis.close() }
        let list = try await command(redis, ["CLIENT", "LIST"]).string ?? ""
        let count = list.split(separator: "\n").filter { $0.contains(" name=state-test ") }.count
        #expect(count >= 1 && count <= 4)
        #expect(store.client.connectionCount <= 4)
    }

    @Test("a password-protected server: the right password works, a wrong one fails without showing it")
    func password() async throws {
        let server = try RedisServer(["--requirepass", "s3cret-pass"])
        defer { server.stop() }
        var settings = RedisStateStore.Settings(
            configuration: .init(address: server.address, password: "s3cret-pass"))
        let store = try RedisStateStore(settings: settings, group: group, logger: logger)
        defer { _ = store.close(on: group.next()) }
        try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: group.next()).get()

        settings.configuration.password = "wrong-pass"
        do {
            _ = try RedisStateStore(settings: settings, group: group, logger: logger)
            Issue.record("a wrong password was accepted")
        } catch {
            let message = "\(RedisStateStore.storeError(error, keys: []))"
            #expect(!message.contains("wrong-pass") && !message.contains("s3cret-pass"))
            #expect(message.contains("WRONGPASS") || message.contains("invalid"), "\(message)")
        }
    }

    @Test(
        "metadata is read with Dapr's names and what cannot be served is refused, naming the field",
        arguments: [
            (["redisHost": "a:1,b:2"], "spec.metadata.redisHost"),
            (["redisHost": "localhost:6379", "redisType": "cluster"], "spec.metadata.redisType"),
            (["redisHost": "localhost:6379", "failover": "true"], "spec.metadata.failover"),
            (["redisHost": "localhost:6379", "enableTLS": "maybe"], "spec.metadata.enableTLS"),
            (["redisHost": "localhost:6379", "enableTLS": "true", "caCert": "not pem"], "spec.metadata.caCert"),
            (["redisHost": "localhost:6379", "enableTLS": "true", "clientKey": "x"], "spec.metadata.clientCert"),
            (["redisHost": "localhost:6379", "caCert": "x"], "spec.metadata.caCert"),
            (["redisHost": "localhost:6379", "poolSize": "0"], "spec.metadata.poolSize"),
            (["redisHost": "localhost:70000"], "spec.metadata.redisHost"),
            (["redisHost": "localhost:6379", "redisPort": "6380"], "spec.metadata.redisPort"),
            (["redisHost": "localhost:6379", "readTimeout": "soon"], "spec.metadata.readTimeout"),
            (["redisHost": "localhost:6379", "queryIndexes": "[{}]"], "spec.metadata.queryIndexes"),
            (["redisHost": "localhost:6379", "keyLayout": "flat"], "spec.metadata.keyLayout"),
        ])
    func refusedMetadata(metadata: [String: String], field: String) throws {
        let definition = ComponentDefinition(name: "s", type: "state.redis", metadata: metadata)
        #expect(throws: ComponentDefinitionError.self) { try RedisStateStore.settings(definition) }
        do {
            _ = try RedisStateStore.settings(definition)
        } catch {
            #expect(error.field == field)
        }
    }

    @Test("metadata values: host and port, database, pool size, timeouts in milliseconds or Go durations")
    func acceptedMetadata() throws {
        let settings = try RedisStateStore.settings(
            ComponentDefinition(
                name: "orders", type: "state.redis",
                metadata: [
                    "redisHost": "redis.internal", "redisPort": "6380", "redisDB": "3", "redisUsername": "app",
                    "redisPassword": "pw", "poolSize": "16", "readTimeout": "1500", "dialTimeout": "2s",
                    "ttlInSeconds": "60", "keyLayout": "dapr",
                ]))
        #expect(settings.configuration.address == .tcp(host: "redis.internal", port: 6380))
        #expect(settings.configuration.database == 3)
        #expect(settings.configuration.username == "app")
        #expect(settings.configuration.password == "pw")
        #expect(settings.configuration.connectTimeout == .seconds(2))
        #expect(settings.options.maxConnections == 16)
        #expect(settings.commandTimeout == .milliseconds(1500))
        #expect(settings.defaultTTL == .seconds(60))
        #expect(settings.keyLayout == .dapr)
        let ipv6 = try RedisStateStore.settings(
            ComponentDefinition(name: "s", type: "state.redis", metadata: ["redisHost": "[::1]:7000"]))
        #expect(ipv6.configuration.address == .tcp(host: "::1", port: 7000))
        #expect(ipv6.options.maxConnections == 8 && ipv6.commandTimeout == .seconds(3))
    }
}
