import Foundation
import HangarComponents
import HangarPostgres
import HangarSQLite
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

    var testDescription: String { rawValue }
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
        default:
            Issue.record("no purgeExpired for \(type(of: store))")
            return 0
        }
    }

    /// Runs `body` with a new store of `kind`, then closes it and removes its files.
    static func withStore(
        _ kind: StoreKind, _ body: (any TransactionalStateStore, any EventLoop) async throws -> Void
    ) async throws {
        let eventLoop = group.next()
        let directory = try makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store: any TransactionalStateStore =
            switch kind {
            case .inMemory: InMemoryStateStore()
            case .sqliteFile: try openSQLite(path: directory.appendingPathComponent("state.db").path)
            case .sqliteMemory: try openSQLite(path: ":memory:")
            case .postgres: try await PostgresTestStore.open()
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
