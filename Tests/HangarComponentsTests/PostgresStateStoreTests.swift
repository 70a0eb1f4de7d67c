import Foundation
import HangarComponents
import HangarPostgres
import HangarTestSupport
import Logging
import NIOCore
import Testing
import HangarSync

extension StoreKind {
    /// Whether the store's ETags are UUIDs (PostgreSQL v2) rather than Hangar's decimal versions.
    var etagIsUUID: Bool { self == .postgres }

}

/// `state.postgresql` stores on the shared test server, each on tables of its own (a fresh `tablePrefix`).
enum PostgresTestStore {
    static func configuration(
        server: PostgresServer, prefix: String = uniquePrefix(), metadata: [String: String] = [:]
    ) throws -> PostgresStateStore.Configuration {
        var fields = ["connectionString": server.connectionString(), "tablePrefix": prefix, "cleanupInterval": "0"]
        fields.merge(metadata) { $1 }
        return try PostgresStateStore.configuration(
            ComponentDefinition(name: "pg", type: "state.postgresql", version: "v2", metadata: fields))
    }

    static func uniquePrefix() -> String { "t\(UUID().uuidString.prefix(8).lowercased())_" }

    /// A store on fresh tables of the shared server.
    static func open() async throws -> PostgresStateStore {
        try await connect(configuration(server: PostgresServer.sharedServer()))
    }

    static func connect(_ configuration: PostgresStateStore.Configuration) async throws -> PostgresStateStore {
        try await PostgresStateStore.connect(
            configuration: configuration, eventLoopGroup: StateTestEnvironment.group,
            logger: StateTestEnvironment.logger)
    }
}

@Suite("state.postgresql")
struct PostgresStateStoreTests {
    typealias Env = StateTestEnvironment

    // MARK: Metadata

    @Test("connection strings parse in URL and key=value forms, and the password never shows")
    func connectionStrings() throws {
        let url = try PostgresConnectionString(
            parsing: "postgres://dapr:s%40cret@db.example:6432/state?sslmode=disable&connect_timeout=5")
        #expect(url.user == "dapr" && url.password == "s@cret" && url.host == "db.example" && url.port == 6432)
        #expect(url.database == "state" && url.sslMode == .disable && url.connectTimeout == .seconds(5))
        let pairs = try PostgresConnectionString(
            parsing: "host=/run/pg port=5433 user=app password='it\\'s a \\\\ secret' dbname=d sslmode=verify-full")
        #expect(pairs.unixSocketPath == "/run/pg/.s.PGSQL.5433")
        #expect(pairs.password == "it's a \\ secret")
        #expect(pairs.sslMode == .verifyFull)
        for parsed in [url, pairs] {
            #expect(!parsed.redacted.contains(parsed.password ?? "-"))
        }
        #expect(throws: PostgresConnectionString.ParseError.self) {
            try PostgresConnectionString(parsing: "host=x password")
        }
    }

    @Test("bad metadata is refused naming the field, without the password")
    func badMetadata() throws {
        func refusal(_ metadata: [String: String], version: String = "v2") -> ComponentDefinitionError? {
            do {
                _ = try PostgresStateStore.configuration(
                    ComponentDefinition(name: "pg", type: "state.postgresql", version: version, metadata: metadata))
                return nil
            } catch {
                return error
            }
        }
        let good = "host=localhost user=u password=TopSecret1 sslmode=disable"
        let v1 = try #require(refusal(["connectionString": good], version: "v1"))
        #expect(v1.field == "spec.version" && v1.message.contains("v2"))
        let badPort = try #require(refusal(["connectionString": "host=h port=x password=TopSecret1"]))
        #expect(badPort.field == "spec.metadata.connectionString" && !badPort.message.contains("TopSecret1"))
        #expect(
            refusal(["connectionString": good, "tablePrefix": "x; DROP TABLE y"])?.field == "spec.metadata.tablePrefix")
        #expect(
            refusal(["connectionString": good, "metadataTableName": "a b"])?.field
                == "spec.metadata.metadataTableName")
        #expect(refusal(["connectionString": good, "timeout": "500ms"])?.field == "spec.metadata.timeout")
        #expect(refusal(["connectionString": good, "maxConns": "many"])?.field == "spec.metadata.maxConns")
        #expect(refusal(["connectionString": good, "keyLayout": "other"])?.field == "spec.metadata.keyLayout")
        let defaults = try PostgresStateStore.configuration(
            ComponentDefinition(
                name: "pg", type: "state.postgresql", version: "v2", metadata: ["connectionString": good]))
        #expect(defaults.backend.maxConnections == 8)
        #expect(defaults.timeout == .seconds(20) && defaults.cleanupInterval == .seconds(3600))
        #expect(defaults.stateTable == "state" && defaults.metadataTableName == "dapr_metadata")
        #expect(PostgresStateStore.descriptor.metadata.contains { $0.name == "keyLayout" })
    }

    // MARK: Migrations

    @Test("migrations run once, concurrently from several processes, and again as no-ops")
    func migrations() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server)
        let stores = try await withThrowingTaskGroup(of: PostgresStateStore.self) { group in
            for _ in 0..<4 { group.addTask { try await PostgresTestStore.connect(configuration) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        let loop = Env.group.next()
        try await stores[0].set(StateSetRequest(key: "kept", value: Data("v".utf8)), on: loop).get()
        for store in stores { try await store.close(on: loop).get() }

        let again = try await PostgresTestStore.connect(configuration)
        #expect(try await again.get("kept", on: loop).get()?.value == Data("v".utf8))
        try await again.close(on: loop).get()

        let table = configuration.stateTable
        #expect(
            try await server.sql("SELECT value FROM dapr_metadata WHERE key = '\(configuration.migrationKey)'") == "2")
        let columns = try await server.sql(
            "SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = '\(table)'"
        )
        #expect(
            columns == "key:text,value:bytea,etag:uuid,created_at:timestamp with time zone,"
                + "updated_at:timestamp with time zone,expires_at:timestamp with time zone,row_id:bigint")
        #expect(try await server.sql("SELECT count(*) FROM pg_indexes WHERE tablename = '\(table)'") == "3")
        #expect(
            try await server.sql(
                "SELECT is_identity FROM information_schema.columns WHERE table_name = '\(table)' AND column_name = 'row_id'"
            ) == "YES")
    }

    // MARK: Dapr's data

    @Test("rows written with Dapr's own v2 SQL are read by Hangar with keyLayout dapr, and the other way round")
    func daprCompatibility() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server, metadata: ["keyLayout": "dapr"])
        let store = try await PostgresTestStore.connect(configuration)
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        let table = configuration.stateTable

        // daprd's doSet for `myapp||greeting`, value as the JSON bytes it marshals.
        try await server.sql(
            """
            INSERT INTO \(table) AS t (key, value, etag, expires_at) VALUES ('myapp||greeting', convert_to('"hello"', 'UTF8'), gen_random_uuid(), NULL)
            ON CONFLICT (key) DO UPDATE SET value = convert_to('"hello"', 'UTF8'), updated_at = now(), etag = gen_random_uuid(), expires_at = NULL
            """)
        let daprETag = try await server.sql("SELECT etag::text FROM \(table) WHERE key = 'myapp||greeting'")
        let read = try #require(try await store.get("tenant||myapp||greeting", on: loop).get())
        #expect(read.value == Data("\"hello\"".utf8))
        #expect(read.etag == daprETag)

        // Hangar's write, checked with Dapr's ETag update and read.
        try await store.set(
            StateSetRequest(key: "tenant||myapp||answer", value: Data("42".utf8), etag: nil), on: loop
        ).get()
        let written = try #require(try await store.get("tenant||myapp||answer", on: loop).get())
        #expect(
            try await server.sql(
                "SELECT convert_from(value, 'UTF8') || ' ' || etag::text FROM \(table) WHERE key = 'myapp||answer'")
                == "42 \(written.etag)")
        let updated = try await server.sql(
            """
            UPDATE \(table) SET value = convert_to('43', 'UTF8'), updated_at = now(), etag = gen_random_uuid(), expires_at = NULL
            WHERE key = 'myapp||answer' AND etag = '\(written.etag)' AND (expires_at IS NULL OR expires_at >= now()) RETURNING 1
            """)
        #expect(updated == "1")
        await #expect(throws: StateStoreError.etagMismatch(key: "tenant||myapp||answer")) {
            try await store.set(
                StateSetRequest(key: "tenant||myapp||answer", value: Data("44".utf8), etag: written.etag), on: loop
            ).get()
        }
        #expect(try await store.get("tenant||myapp||answer", on: loop).get()?.value == Data("43".utf8))

        // With the default layout the namespace stays in the key.
        let hangar = try await PostgresTestStore.connect(
            try PostgresTestStore.configuration(server: server, prefix: configuration.tablePrefix))
        defer { _ = hangar.close(on: loop) }
        try await hangar.set(StateSetRequest(key: "tenant||myapp||answer", value: Data("x".utf8)), on: loop).get()
        #expect(try await server.sql("SELECT count(*) FROM \(table) WHERE key = 'tenant||myapp||answer'") == "1")
        #expect(try await store.get("tenant||myapp||answer", on: loop).get()?.value == Data("43".utf8))
    }

    // MARK: Expiry

    @Test("TTL cleanup deletes expired rows once per interval, coordinated by the metadata table's last-cleanup row")
    func cleanup() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server)
        let store = try await PostgresTestStore.connect(configuration)
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        try await store.set(StateSetRequest(key: "brief", value: Data("b".utf8), ttl: .seconds(1)), on: loop).get()
        try await store.set(StateSetRequest(key: "lasting", value: Data("l".utf8)), on: loop).get()
        let expiresAt = try #require(try await store.get("brief", on: loop).get()?.expiresAt)
        #expect(abs(expiresAt.timeIntervalSinceNow - 1) < 1)
        try await Task.sleep(for: .milliseconds(1300))
        #expect(try await store.get("brief", on: loop).get() == nil)
        #expect(try await server.sql("SELECT count(*) FROM \(configuration.stateTable)") == "2", "expired, not yet deleted")

        #expect(try await store.cleanupExpired(interval: .seconds(3600), on: loop).get() == 1)
        #expect(try await server.sql("SELECT count(*) FROM \(configuration.stateTable)") == "1")
        #expect(
            try await server.sql(
                "SELECT count(*) FROM dapr_metadata WHERE key = '\(configuration.cleanupKey)' AND value::timestamptz > now() - interval '1 minute'"
            ) == "1")
        // Within the interval another cleanup (another process's) does nothing.
        try await store.set(StateSetRequest(key: "brief2", value: Data("b".utf8), ttl: .seconds(1)), on: loop).get()
        try await Task.sleep(for: .milliseconds(1300))
        #expect(try await store.cleanupExpired(interval: .seconds(3600), on: loop).get() == nil)
        #expect(try await store.cleanupExpired(interval: .milliseconds(200), on: loop).get() == 1)
    }

    // MARK: Byte accounting

    /// The bytes really present per partition, as every store counts them.
    static func bytesPresent(_ server: PostgresServer, table: String, partition: String) async throws -> Int {
        Int(
            try await server.sql(
                "SELECT COALESCE(sum(octet_length(key) + octet_length(value)), 0) FROM \(table) WHERE split_part(key, '||', 1) = '\(partition)'"
            )) ?? -1
    }

    @Test("two stores (two nodes) writing one tenant at once stay within its limit plus the documented slack")
    func twoNodesShareOneLimit() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server, metadata: ["maxConns": "4"])
        let nodes = [
            try await PostgresTestStore.connect(configuration), try await PostgresTestStore.connect(configuration),
        ]
        let loop = Env.group.next()
        defer { for node in nodes { _ = node.close(on: loop) } }
        // Items of 8 + 12 = 20 bytes ("c||07i05"); 100 fit in 2000. Each node runs 6 writers on its 3 pooled
        // connections.
        let limit = 2000
        let outcomes = try await withThrowingTaskGroup(of: Int.self) { tasks in
            for writer in 0..<12 {
                let node = nodes[writer % 2]
                tasks.addTask {
                    var written = 0
                    for index in 0..<40 {
                        do {
                            try await node.set(
                                StateSetRequest(
                                    key: "c||\(writer / 10)\(writer % 10)i\(index / 10)\(index % 10)",
                                    value: Data("hello world!".utf8), byteLimit: limit),
                                on: Env.group.next()
                            ).get()
                            written += 1
                        } catch StateStoreError.byteLimitExceeded(let partition, let usage, let refusedLimit) {
                            #expect(partition == "c" && usage > limit && refusedLimit == limit)
                        }
                    }
                    return written
                }
            }
            return try await tasks.reduce(0, +)
        }
        // At most one write per pooled connection commits unseen by the others: 6 connections, so 5 items over.
        let slack = 2 * (4 - 1) - 1
        #expect((100...100 + slack).contains(outcomes), "\(outcomes) items written")
        let present = try await Self.bytesPresent(server, table: configuration.stateTable, partition: "c")
        #expect(present == 20 * outcomes)
        for node in nodes {
            #expect(try await node.refreshUsage(on: loop).get() == ["c": present], "both nodes count what is there")
        }
        // Once over, nothing that grows passes on either node; shrinking does.
        for node in nodes {
            await #expect(throws: StateStoreError.self) {
                try await node.set(StateSetRequest(key: "c||more", value: Data("x".utf8), byteLimit: limit), on: loop)
                    .get()
            }
        }
        try await nodes[1].set(StateSetRequest(key: "c||00i00", value: Data(), byteLimit: limit), on: loop).get()
    }

    @Test("usage stays equal to the bytes present under racing inserts, overwrites and deletes of the same keys")
    func racingWritesKeepUsageExact() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server)
        let nodes = [
            try await PostgresTestStore.connect(configuration), try await PostgresTestStore.connect(configuration),
        ]
        let loop = Env.group.next()
        defer { for node in nodes { _ = node.close(on: loop) } }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for writer in 0..<8 {
                let node = nodes[writer % 2]
                tasks.addTask {
                    var random = SystemRandomNumberGenerator()
                    for _ in 0..<60 {
                        // Four keys, so that writers meet on the same key, absent or present.
                        let key = "r||k\(Int.random(in: 0..<4, using: &random))"
                        let eventLoop = Env.group.next()
                        switch Int.random(in: 0..<4, using: &random) {
                        case 0: try await node.delete(StateDeleteRequest(key: key), on: eventLoop).get()
                        case 1:
                            let request = StateSetRequest(
                                key: key, value: Data(repeating: 1, count: Int.random(in: 0..<50, using: &random)),
                                concurrency: .firstWrite)
                            do {
                                try await node.set(request, on: eventLoop).get()
                            } catch StateStoreError.etagMismatch {}
                        default:
                            let request = StateSetRequest(
                                key: key, value: Data(repeating: 2, count: Int.random(in: 0..<50, using: &random)))
                            try await node.set(request, on: eventLoop).get()
                        }
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let present = try await Self.bytesPresent(server, table: configuration.stateTable, partition: "r")
        #expect(try await nodes[0].refreshUsage(on: loop).get() == (present > 0 ? ["r": present] : [:]))
    }

    @Test("concurrent transactions writing different keys of one tenant never deadlock on its usage rows")
    func transactionsDoNotDeadlock() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server)
        let store = try await PostgresTestStore.connect(configuration)
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        // Each writer has keys of its own (no two transactions lock the same state row), spread over the usage
        // shards: only the usage rows are shared.
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for writer in 0..<8 {
                tasks.addTask {
                    var random = SystemRandomNumberGenerator()
                    for _ in 0..<25 {
                        let keys = Set((0..<4).map { _ in Int.random(in: 0..<40, using: &random) })
                        let operations = keys.shuffled(using: &random).map { index -> StateOperation in
                            let key = "t||w\(writer)k\(index)"
                            if index % 5 == 0 { return .delete(StateDeleteRequest(key: key)) }
                            return .set(
                                StateSetRequest(key: key, value: Data(repeating: 7, count: index), byteLimit: 1 << 20))
                        }
                        try await store.transact(operations, on: Env.group.next()).get()
                    }
                }
            }
            try await tasks.waitForAll()
        }
        let present = try await Self.bytesPresent(server, table: configuration.stateTable, partition: "t")
        #expect(try await store.refreshUsage(on: loop).get() == ["t": present])
    }

    @Test("usage survives a restart, and rows present before the usage table existed are counted when it is made")
    func usageOfExistingRows() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server)
        let loop = Env.group.next()
        var store = try await PostgresTestStore.connect(configuration)
        try await store.set(StateSetRequest(key: "a||x", value: Data("12345".utf8)), on: loop).get()
        try await store.set(StateSetRequest(key: "b||yy", value: Data("1".utf8)), on: loop).get()
        try await store.close(on: loop).get()
        store = try await PostgresTestStore.connect(configuration)
        #expect(store.usageByPartition == ["a": 9, "b": 6], "read back at open")
        try await store.close(on: loop).get()

        // As an older hangard (or daprd) left it: rows, no usage table. Dapr's own write adds one more.
        try await server.sql("DROP TABLE \(configuration.usageTable)")
        try await server.sql("DELETE FROM dapr_metadata WHERE key = '\(configuration.usageMigrationKey)'")
        try await server.sql(
            "INSERT INTO \(configuration.stateTable) (key, value, etag) VALUES ('a||dapr', convert_to('zz', 'UTF8'), gen_random_uuid())"
        )
        store = try await PostgresTestStore.connect(configuration)
        defer { _ = store.close(on: loop) }
        #expect(store.usageByPartition == ["a": 18, "b": 6])  // 9 + (7 + 2)
        await #expect(throws: StateStoreError.byteLimitExceeded(partition: "a", usage: 24, limit: 20)) {
            try await store.set(StateSetRequest(key: "a||new", value: Data(), byteLimit: 20), on: loop).get()
        }
    }

    @Test("in keyLayout dapr, sizes and partitions are the physical key's, and the cleanup takes expired bytes off")
    func daprLayoutUsage() async throws {
        let server = try await PostgresServer.sharedServer()
        let configuration = try PostgresTestStore.configuration(server: server, metadata: ["keyLayout": "dapr"])
        let store = try await PostgresTestStore.connect(configuration)
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        try await store.set(StateSetRequest(key: "ns||app||k", value: Data("v".utf8)), on: loop).get()
        try await store.set(
            StateSetRequest(key: "ns||app||brief", value: Data("12345".utf8), ttl: .seconds(1)), on: loop
        ).get()
        #expect(store.usageByPartition == ["ns": 11 + 19])  // (10 + 1) + (14 + 5)
        #expect(try await server.sql("SELECT string_agg(key, ',' ORDER BY key) FROM \(configuration.stateTable)")
            == "app||brief,app||k")
        try await Task.sleep(for: .milliseconds(1300))
        // 30 + 1 > 12, but without the expired row 11 + 1 fits: it is deleted and the write passes.
        try await store.set(StateSetRequest(key: "ns||app||k", value: Data("vv".utf8), byteLimit: 12), on: loop).get()
        #expect(try await server.sql("SELECT count(*) FROM \(configuration.stateTable)") == "1")
        #expect(store.usageByPartition == ["ns": 12])
        await #expect(throws: StateStoreError.byteLimitExceeded(partition: "ns", usage: 13, limit: 12)) {
            try await store.set(StateSetRequest(key: "ns||app||k", value: Data("vvv".utf8), byteLimit: 12), on: loop)
                .get()
        }
        try await store.set(StateSetRequest(key: "ns||app||brief", value: Data("1".utf8), ttl: .seconds(1)), on: loop)
            .get()
        #expect(store.usageByPartition == ["ns": 27])
        try await Task.sleep(for: .milliseconds(1300))
        #expect(try await store.cleanupExpired(interval: .milliseconds(200), on: loop).get() == 1)
        #expect(store.usageByPartition == ["ns": 12])
    }

    // MARK: The pool and outages

    @Test("many concurrent callers share at most maxConns connections")
    func poolBound() async throws {
        let server = try await PostgresServer.sharedServer()
        let user = "pool_\(UUID().uuidString.prefix(6).lowercased())"
        try await PostgresServer.offThread { try server.createUser(user, password: "pool-secret") }
        let configuration = try PostgresTestStore.configuration(server: server, metadata: [
            "connectionString": server.connectionString(user: user, password: "pool-secret"), "maxConns": "3",
            "metadataTableName": "\(user)_metadata",
        ])
        let store = try await PostgresTestStore.connect(configuration)
        defer { _ = store.close(on: Env.group.next()) }
        let peak = Peak()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<64 {
                group.addTask {
                    let loop = Env.group.next()
                    for round in 0..<10 {
                        try await store.set(
                            StateSetRequest(
                                key: "k\(index % 8)", value: Data("\(round)".utf8), concurrency: .lastWrite),
                            on: loop
                        ).get()
                    }
                }
            }
            group.addTask {
                for _ in 0..<10 {
                    let count = Int(try await server.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = '\(user)'"))
                    peak.record(count ?? 0)
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            try await group.waitForAll()
        }
        #expect(peak.value >= 1 && peak.value <= 3, "peak \(peak.value)")
    }

    @Test("connections idle for connectionMaxIdleTime are closed, and later calls open what they need again")
    func idleConnectionsClose() async throws {
        let server = try await PostgresServer.sharedServer()
        let user = "idle_\(UUID().uuidString.prefix(6).lowercased())"
        try await PostgresServer.offThread { try server.createUser(user, password: "idle-secret") }
        let configuration = try PostgresTestStore.configuration(server: server, metadata: [
            "connectionString": server.connectionString(user: user, password: "idle-secret"), "maxConns": "5",
            "metadataTableName": "\(user)_metadata", "connectionMaxIdleTime": "1s",
        ])
        let store = try await PostgresTestStore.connect(configuration)
        defer { _ = store.close(on: Env.group.next()) }
        let connections = { @Sendable () async throws -> Int in
            Int(try await server.sql("SELECT count(*) FROM pg_stat_activity WHERE usename = '\(user)'")) ?? -1
        }
        let burst = { @Sendable () async throws in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<32 {
                    group.addTask {
                        for round in 0..<20 {
                            try await store.set(
                                StateSetRequest(key: "k\(index)", value: Data("\(round)".utf8)), on: Env.group.next()
                            ).get()
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        try await burst()
        let busy = try await connections()
        #expect(busy >= 2 && busy <= 4, "after the burst: \(busy) connections")
        // Idle for over a second: all but the one the health check uses each second are closed.
        var idle = busy
        for _ in 0..<40 where idle > 1 {
            try await Task.sleep(for: .milliseconds(100))
            idle = try await connections()
        }
        #expect(idle <= 1, "after idling: \(idle) connections")
        try await burst()
        let again = try await connections()
        #expect(again >= 2 && again <= 4, "after a second burst: \(again) connections")
    }

    @Test("with the server down calls fail fast as unavailable, health is DOWN, and service returns without reopening")
    func outage() async throws {
        let server = try await PostgresServer.make()
        defer { server.stop() }
        let store = try await PostgresTestStore.connect(try PostgresTestStore.configuration(server: server))
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        try await store.set(StateSetRequest(key: "k", value: Data("before".utf8)), on: loop).get()
        #expect(store.backendProblem == nil)

        try await PostgresServer.offThread { server.crash() }
        for index in 0..<10 {
            let start = ContinuousClock.now
            do {
                try await store.set(StateSetRequest(key: "k\(index)", value: Data("x".utf8)), on: loop).get()
                Issue.record("a write succeeded with the server down")
            } catch let error as StateStoreError {
                guard case .unavailable(let message) = error else {
                    Issue.record("expected unavailable, got \(error)")
                    continue
                }
                #expect(!message.contains(PostgresServer.superPassword))
            }
            let elapsed = ContinuousClock.now - start
            #expect(elapsed < .milliseconds(900), "call \(index) took \(elapsed)")
        }
        #expect(store.backendProblem != nil)

        try await PostgresServer.offThread { try server.restart() }
        let back = ContinuousClock.now
        var value: Data?
        var lastError: (any Error)?
        while ContinuousClock.now - back < .seconds(5) {
            do {
                value = try await store.get("k", on: loop).get()?.value
                break
            } catch {
                lastError = error
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            value == Data("before".utf8),
            "served again within 5 s of the server's return: \(String(describing: lastError))")
        #expect(store.backendProblem == nil)
    }

    @Test("calls in flight when the server crashes fail fast too, and none hangs")
    func crashUnderLoad() async throws {
        let server = try await PostgresServer.make()
        defer { server.stop() }
        let store = try await PostgresTestStore.connect(try PostgresTestStore.configuration(server: server))
        defer { _ = store.close(on: Env.group.next()) }
        let slowest = Peak()
        let failures = Peak()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    let loop = Env.group.next()
                    let end = ContinuousClock.now + .seconds(3)
                    var index = 0
                    while ContinuousClock.now < end {
                        let start = ContinuousClock.now
                        do {
                            try await store.set(
                                StateSetRequest(key: "w\(writer)-\(index)", value: Data("x".utf8)), on: loop
                            ).get()
                        } catch {
                            failures.record(failures.value + 1)
                            slowest.record(Int((ContinuousClock.now - start).milliseconds))
                            try await Task.sleep(for: .milliseconds(10))
                        }
                        index += 1
                    }
                }
            }
            group.addTask {
                try await Task.sleep(for: .milliseconds(500))
                try await PostgresServer.offThread { server.crash() }
            }
            try await group.waitForAll()
        }
        #expect(failures.value > 0)
        #expect(slowest.value < 900, "the slowest failing call took \(slowest.value) ms")
    }

    @Test("a server that hangs is found by the health check; calls then fail fast, and succeed once it resumes")
    func hungServer() async throws {
        let server = try await PostgresServer.make()
        defer {
            server.signalAll(SIGCONT)
            server.stop()
        }
        let store = try await PostgresTestStore.connect(try PostgresTestStore.configuration(server: server))
        let loop = Env.group.next()
        defer { _ = store.close(on: loop) }
        try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()

        server.signalAll(SIGSTOP)
        // The first call waits for the health check (every second, with a 2 s deadline and a 2 s probe).
        let first = ContinuousClock.now
        await #expect(throws: StateStoreError.self) { try await store.get("k", on: loop).get() }
        #expect(ContinuousClock.now - first < .seconds(7))
        #expect(store.backendProblem != nil)
        for _ in 0..<5 {
            let start = ContinuousClock.now
            await #expect(throws: StateStoreError.self) { try await store.get("k", on: loop).get() }
            #expect(ContinuousClock.now - start < .milliseconds(900))
        }

        server.signalAll(SIGCONT)
        let back = ContinuousClock.now
        var value: Data?
        while value == nil, ContinuousClock.now - back < .seconds(5) {
            value = try? await store.get("k", on: loop).get()?.value
            if value == nil { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(value == Data("v".utf8))
    }

    @Test("the first failure after the server goes away marks the backend DOWN even with no call made")
    func healthCheckFindsOutage() async throws {
        let server = try await PostgresServer.make()
        defer { server.stop() }
        let store = try await PostgresTestStore.connect(try PostgresTestStore.configuration(server: server))
        defer { _ = store.close(on: Env.group.next()) }
        try await PostgresServer.offThread { server.crash() }
        let start = ContinuousClock.now
        while store.backendProblem == nil, ContinuousClock.now - start < .seconds(5) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(store.backendProblem != nil)
        try await PostgresServer.offThread { try server.restart() }
        let back = ContinuousClock.now
        while store.backendProblem != nil, ContinuousClock.now - back < .seconds(5) {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(store.backendProblem == nil)
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

/// The highest value recorded.
private final class Peak: Sendable {
    private let state = Locked(0)
    func record(_ value: Int) { state.withLock { $0 = max($0, value) } }
    var value: Int { state.withLock { $0 } }
}
