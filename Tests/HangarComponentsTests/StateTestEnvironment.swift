import Foundation
import HangarComponents
import HangarPostgres
import HangarRedis
import HangarSQLite
import HangarTestSupport
import Logging
import NIOCore
import NIOPosix
import Testing

/// The state stores the conformance suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inMemory = "in-memory"
    case sqliteFile = "sqlite file"
    case sqliteMemory = "sqlite :memory:"
    case postgres = "postgresql"
    /// `state.redis` on a real `redis-server` started for the test.
    case redis = "redis"

    var testDescription: String { rawValue }

    /// Whether concurrent writers are held to a byte limit exactly. PostgreSQL's check reads the partition's
    /// committed bytes, so writes committing at the same moment may overshoot it (`PostgresStateStore`).
    var limitsExactly: Bool { self != .postgres }

    /// A well-formed ETag that no item carries: PostgreSQL's are UUIDs, the others' numbers.
    var neverCurrentETag: String { self == .postgres ? "00000000-0000-4000-8000-000000000000" : "999999999" }

    /// Whether ETags come from one counter for the whole store, so that no two writes share one. Redis's are
    /// per-key versions (Dapr's layout): two keys can both be at version 1.
    var etagsAreStoreWide: Bool { self != .redis }

    /// The kinds the byte-accounting suite runs against: every store counts bytes and enforces `byteLimit`.
    static var countingBytes: [StoreKind] { allCases }
}

/// Event loops, a thread pool and a quiet logger shared by every test.
enum StateTestEnvironment {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    static let threadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()
    static let logger = Logger(label: "hangar.tests.state") { _ in SwiftLogNoOpLogHandler() }

    /// A fresh empty directory under the temporary directory; the caller removes it.
    static func makeDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-state-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    static func openSQLite(
        path: String, tableName: String = "state", cleanupInterval: Duration? = nil
    ) throws -> SQLiteStateStore {
        try SQLiteStateStore(
            configuration: .init(path: path, tableName: tableName, cleanupInterval: cleanupInterval),
            threadPool: threadPool, eventLoopGroup: group, logger: logger)
    }

    /// A `state.redis` store on `server`.
    static func openRedis(
        _ server: RedisServer, keyLayout: StateKeyLayout = .hangar, healthCheckInterval: TimeAmount = .seconds(1)
    ) throws -> RedisStateStore {
        try RedisStateStore(
            settings: .init(
                configuration: .init(address: .tcp(host: "127.0.0.1", port: server.port), connectTimeout: .seconds(10)),
                // The conformance suite checks what a store does, not how fast: on a loaded machine (the whole suite
                // runs in parallel on two cores in CI) a 1 MiB value's script can take longer than the 3 s default.
                // The deadline itself is tested in HangarRedisTests.
                commandTimeout: .seconds(30), keyLayout: keyLayout, healthCheckInterval: healthCheckInterval),
            group: group, logger: logger)
    }

    /// `bulkGet`, failing on the first per-key failure.
    static func entries(
        _ keys: [String], in store: any StateStore, on eventLoop: any EventLoop
    ) async throws -> [StateEntry?] {
        try await store.bulkGet(keys, on: eventLoop).get().map { try $0.get() }
    }

    /// Removes expired items now, through whichever `purgeExpired(on:)` the store has; returns how many there were.
    static func purgeExpired(_ store: any StateStore, on eventLoop: any EventLoop) async throws -> Int {
        switch store {
        case let store as InMemoryStateStore: return try await store.purgeExpired(on: eventLoop).get()
        case let store as SQLiteStateStore: return try await store.purgeExpired(on: eventLoop).get()
        case let store as PostgresStateStore: return try await store.purgeExpired(on: eventLoop).get()
        case let store as RedisStateStore: return try await store.purgeExpired(on: eventLoop).get()
        default:
            Issue.record("no purgeExpired for \(type(of: store))")
            return 0
        }
    }

    /// The store's usage once every write has settled: PostgreSQL's `usageByPartition` is a cache set by each
    /// write's answer, which concurrent writes may leave behind, so it is read again from the database first.
    static func settledUsage(_ store: any StateStore, on eventLoop: any EventLoop) async throws -> [String: Int] {
        if let store = store as? PostgresStateStore { return try await store.refreshUsage(on: eventLoop).get() }
        return store.usageByPartition
    }

    /// Runs `body` with a new store of `kind`, then closes it and removes its files.
    static func withStore(
        _ kind: StoreKind, _ body: (any TransactionalStateStore, any EventLoop) async throws -> Void
    ) async throws {
        let eventLoop = group.next()
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var server: RedisServer?
        defer { server?.stop() }
        let store: any TransactionalStateStore
        switch kind {
        case .inMemory: store = InMemoryStateStore()
        case .sqliteFile: store = try openSQLite(path: directory.appendingPathComponent("state.db").path)
        case .sqliteMemory: store = try openSQLite(path: ":memory:")
        case .redis:
            // Started and opened on a thread of their own: both block while they wait, and a blocked cooperative
            // thread (there are as many as cores) or thread-pool thread (the SQLite stores' work) delays every other
            // test, the TTL tests among them.
            let (started, opened) = try await PostgresServer.offThread {
                let started = try RedisServer()
                do {
                    return (started, try openRedis(started))
                } catch {
                    started.stop()
                    throw error
                }
            }
            server = started
            store = opened
        case .postgres: store = try await PostgresTestStore.open()
        }
        do {
            try await body(store, eventLoop)
        } catch {
            try? await store.close(on: eventLoop).get()
            throw error
        }
        try await store.close(on: eventLoop).get()
    }
}
