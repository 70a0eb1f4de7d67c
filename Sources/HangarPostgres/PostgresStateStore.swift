import Foundation
package import HangarComponents
package import Logging
package import NIOCore
import PostgresNIO
import HangarSync

/// `state.postgresql` `version: v2`: Dapr's v2 layout and SQL (components-contrib `state/postgresql/v2`), so a table
/// Dapr wrote is read and written in place (with `keyLayout: dapr` for Dapr's `<appId>||<key>` keys).
///
/// The table `<tablePrefix>state` holds `key text` (primary key), `value bytea` (the bytes as given), `etag uuid`
/// (a new random one on every write: the ETag is its text), `created_at`, `updated_at`, `expires_at` (NULL: never)
/// and `row_id`. Reads ignore expired rows; a write treats them as absent. Expired rows are deleted every
/// `cleanupInterval` by whichever process (Hangar or daprd) first finds the metadata table's
/// `last-cleanup-state-v2-<tablePrefix>` row older than the interval.
///
/// One `PostgresBackend` (one pool, at most `maxConns` connections) serves every tenant and app on the node.
///
/// **Byte accounting** (`byteLimit`, `usageByPartition`, a tenant's `maxStateBytes`) is kept in PostgreSQL, in
/// `<tablePrefix>hangar_usage` (created by Hangar's own migration; Dapr ignores the table): each partition's bytes
/// spread over 16 rows, each write adding its change to one of them (chosen by a hash of the key) in the same
/// statement that writes the state row, so the count survives restarts and is shared by every hangard on the
/// database. An item counts `physicalKey.utf8.count + value.count` with the physical key `ns||app||key` in either
/// key layout, so the numbers match the other stores'. A write that grows its partition is checked against the
/// partition's sum *as its statement's snapshot has it*: writes to the same partition committing at the same moment
/// (on this node or others) do not see each other, so a partition may exceed its limit by at most what such
/// concurrent writes add — at most one write or transaction per pooled connection, (`maxConns` − 1) per node — and
/// never when its writes come one at a time. Making it exact would serialise a tenant's growing writes, commit and
/// fsync included, behind one lock. A write that shrinks or keeps the size always passes.
///
/// Expired rows count until deleted, by the cleanup (which takes their bytes off in the same statement) or, for
/// one partition, before a write over its limit is refused: that partition's expired rows are deleted and the write
/// tried once more. Rows Hangar did not count: the rows present when the usage table is created are counted then
/// (once, one scan, in `keyLayout: hangar`; a `keyLayout: dapr` store cannot tell its namespace at that point and
/// counts none); rows written later by anything else (daprd sharing the table, a hangard older than this table)
/// are not counted, nor are expired rows that daprd's own cleanup deletes subtracted. When Hangar overwrites or
/// deletes an uncounted row its size is still subtracted, so a partition's count can fall below what it holds; the
/// usage reported and checked is never below 0.
///
/// `usageByPartition` is a cache: set from each write's answer and from the whole table every
/// `usageRefreshInterval` (and after each cleanup), never a query per read.
package final class PostgresStateStore: TransactionalStateStore, BackendHealthReporting {
    /// What the component's metadata configures.
    package struct Configuration: Sendable {
        package var connectionString: PostgresConnectionString
        /// Prepended to `state`, e.g. `myapp_` or `myschema.` (Dapr's `tablePrefix`).
        package var tablePrefix = ""
        package var metadataTableName = "dapr_metadata"
        /// Dapr's `timeout`: the server's `statement_timeout` and the migrations' bound (default 20 s).
        package var timeout: Duration = .seconds(20)
        /// How often expired rows are deleted; nil: never (Dapr's `cleanupInterval` 0).
        package var cleanupInterval: Duration? = .seconds(3600)
        package var keyLayout = StateKeyLayout.hangar
        package var backend = PostgresBackend.Options()
        /// How often `usageByPartition` is read again from the usage table (writes update it in between).
        package var usageRefreshInterval: Duration = .seconds(5)

        package init(connectionString: PostgresConnectionString) {
            self.connectionString = connectionString
        }

        package var stateTable: String { tablePrefix + "state" }
        /// The metadata table row holding the migration level.
        package var migrationKey: String { "migrations-state-v2-\(tablePrefix)" }
        /// The metadata table row holding the last cleanup's time.
        package var cleanupKey: String { "last-cleanup-state-v2-\(tablePrefix)" }
        /// Hangar's byte accounting next to the state table (Dapr ignores it).
        package var usageTable: String { tablePrefix + "hangar_usage" }
        /// The metadata table row holding the usage table's migration level (Hangar's own, apart from Dapr's).
        package var usageMigrationKey: String { "migrations-hangar-usage-\(tablePrefix)" }
    }

    package let configuration: Configuration
    package let backend: PostgresBackend
    private let schema: PostgresStateSchema
    private let logger: Logger
    private let memory: Memory

    /// What the store remembers between calls, apart from the store so that its background task can hold it.
    private final class Memory: Sendable {
        /// Bytes per partition as last read or written; see the type's documentation.
        let usage = Locked<[String: Int]>([:])
        /// In `keyLayout: dapr`, the namespace of the requests served (the component's: every row is its), which
        /// the cleanup needs to take expired rows' bytes off; nil until the first request.
        let daprNamespace = Locked<String?>(nil)
    }
    /// The backend's pool and health loop and the cleanup loop. Started at open; cancelled and awaited by `close`,
    /// so it outlives no store (a component has no `Service` of its own to run it in).
    private let background: Task<Void, Never>

    package var features: StateFeatures { [.etag, .transactional, .ttl] }
    package var executesInline: Bool { false }
    package var usageByPartition: [String: Int] { memory.usage.withLock { $0 } }
    package var backendProblem: String? { backend.backendProblem }

    private init(configuration: Configuration, backend: PostgresBackend, logger: Logger) {
        let schema = PostgresStateSchema(configuration: configuration)
        self.configuration = configuration
        self.backend = backend
        self.schema = schema
        self.logger = logger
        let cleanupInterval = configuration.cleanupInterval
        let refreshInterval = configuration.usageRefreshInterval
        let memory = Memory()
        self.memory = memory
        background = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { await backend.run() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: refreshInterval)
                        if Task.isCancelled { break }
                        if let read = try? await backend.withConnection({ try await schema.usage($0) }) {
                            memory.usage.withLock { $0 = read }
                        }
                    }
                }
                if let cleanupInterval {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: cleanupInterval)
                            if Task.isCancelled { break }
                            do {
                                let namespace = memory.daprNamespace.withLock { $0 }
                                let (deleted, read) = try await backend.withConnection { connection in
                                    let deleted = try await schema.cleanupExpired(
                                        connection, interval: cleanupInterval, namespace: namespace)
                                    let read = deleted == nil ? nil : try await schema.usage(connection)
                                    return (deleted, read)
                                }
                                if let read { memory.usage.withLock { $0 = read } }
                                if let deleted { logger.debug("deleted \(deleted) expired state rows") }
                            } catch {
                                logger.info("expired state cleanup failed", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
            }
        }
    }

    /// Connects, runs Dapr's migrations (creating the tables on first use) and starts the pool. Blocking: call it
    /// from the thread pool (a component opener), never on an event loop or in a task.
    package static func open(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) throws -> PostgresStateStore {
        try eventLoopGroup.next().makeFutureWithTask {
            try await connect(configuration: configuration, eventLoopGroup: eventLoopGroup, logger: logger)
        }.wait()
    }

    /// `open`, for callers already in a task.
    package static func connect(
        configuration: Configuration, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) async throws -> PostgresStateStore {
        let backend = try PostgresBackend(
            configuration.connectionString, options: configuration.backend, group: eventLoopGroup, logger: logger)
        let store = PostgresStateStore(configuration: configuration, backend: backend, logger: logger)
        do {
            try await store.schema.migrate(backend: backend, logger: logger)
            let read = try await backend.withConnection { try await store.schema.usage($0) }
            store.memory.usage.withLock { $0 = read }
        } catch {
            try? await store.close(on: eventLoopGroup.next()).get()
            throw error
        }
        return store
    }

    /// Runs `body` on a pooled connection as a future on `eventLoop`.
    private func later<T: Sendable>(
        on eventLoop: any EventLoop, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) -> Eventual<T> {
        .later(backend.future(on: eventLoop, body))
    }

    package func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
        if let refusal = Self.unstorable(key) { return .failure(refusal) }
        let schema = schema
        let backendKey = configuration.keyLayout.backendKey(key)
        return later(on: eventLoop) { connection in try await schema.get(connection, key: backendKey) }
    }

    package func bulkGet(
        _ keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[Result<StateEntry?, StateStoreError>]> {
        if keys.isEmpty { return .ready(.success([])) }
        if let refusal = keys.lazy.compactMap(Self.unstorable).first { return .failure(refusal) }
        let schema = schema
        let backendKeys = keys.map(configuration.keyLayout.backendKey)
        return .later(
            backend.future(on: eventLoop) { connection in
                try await schema.bulkGet(connection, keys: Array(Set(backendKeys)))
            }.map { found in
                backendKeys.map { .success(found[$0]) }
            }.recover { error in
                let failure = PostgresBackend.map(error)
                return backendKeys.map { _ in .failure(failure) }
            })
    }

    /// PostgreSQL's `text` cannot hold the NUL character (`invalid byte sequence for encoding "UTF8": 0x00`): such
    /// a key is refused as an invalid key, before anything is sent, rather than failing in the server.
    static func unstorable(_ key: String) -> StateStoreError? {
        guard key.utf8.contains(0) else { return nil }
        return .invalidKey(key: key, reason: "state.postgresql keys cannot contain the NUL character (U+0000)")
    }

    package func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.set(request)], on: eventLoop)
    }

    package func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.delete(request)], on: eventLoop)
    }

    /// One SQL transaction: `BEGIN`, the operations in order, `COMMIT` (one operation: its statement alone); the
    /// first failure rolls everything back. Refused for a byte limit, it is tried once more after the partition's
    /// expired rows are deleted, if it had any.
    package func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        guard let first = operations.first else { return .ready(.success(())) }
        if let refusal = operations.lazy.map(\.key).compactMap(Self.unstorable).first { return .failure(refusal) }
        let schema = schema
        let layout = configuration.keyLayout
        if layout == .dapr { learnNamespace(first.key) }
        return later(on: eventLoop) { connection in
            let written: [PostgresStateSchema.Usage]
            do {
                written = try await schema.transact(connection, operations, layout: layout, logger: Self.quiet)
            } catch StateStoreError.byteLimitExceeded(let partition, let usage, let limit) {
                guard try await schema.purgeExpired(connection, partition: partition) > 0 else {
                    throw StateStoreError.byteLimitExceeded(partition: partition, usage: usage, limit: limit)
                }
                written = try await schema.transact(connection, operations, layout: layout, logger: Self.quiet)
            }
            self.record(written)
        }
    }

    /// Puts partitions' usage as writes left it into the cache.
    private func record(_ written: [PostgresStateSchema.Usage]) {
        memory.usage.withLock { usage in
            for partition in written { usage[partition.partition] = partition.bytes > 0 ? partition.bytes : nil }
        }
    }

    private func learnNamespace(_ physicalKey: String) {
        guard memory.daprNamespace.withLock({ $0 == nil }) else { return }
        let namespace = StatePartition.of(physicalKey)
        memory.daprNamespace.withLock { $0 = namespace }
    }

    /// Deletes every expired row now, whatever the last cleanup's time, and reads the usage again; how many rows
    /// there were.
    package func purgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let schema = schema
        let namespace = memory.daprNamespace.withLock { $0 }
        return later(on: eventLoop) { connection in
            let deleted = try await schema.purgeExpired(connection, namespace: namespace)
            let read = try await schema.usage(connection)
            self.memory.usage.withLock { $0 = read }
            return deleted
        }.future(on: eventLoop)
    }

    /// Dapr's cleanup: deletes the expired rows when the metadata table's last-cleanup row is older than
    /// `interval` (and moves it to now); nil when another process cleaned up within the interval.
    package func cleanupExpired(interval: Duration, on eventLoop: any EventLoop) -> EventLoopFuture<Int?> {
        let schema = schema
        let namespace = memory.daprNamespace.withLock { $0 }
        return later(on: eventLoop) { connection in
            let deleted = try await schema.cleanupExpired(connection, interval: interval, namespace: namespace)
            if deleted != nil {
                let read = try await schema.usage(connection)
                self.memory.usage.withLock { $0 = read }
            }
            return deleted
        }.future(on: eventLoop)
    }

    /// Reads every partition's usage from the database into `usageByPartition` now (it is otherwise refreshed every
    /// `usageRefreshInterval`).
    package func refreshUsage(on eventLoop: any EventLoop) -> EventLoopFuture<[String: Int]> {
        let schema = schema
        return later(on: eventLoop) { connection in
            let read = try await schema.usage(connection)
            self.memory.usage.withLock { $0 = read }
            return read
        }.future(on: eventLoop)
    }

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        backend.markClosed()
        let background = background
        return eventLoop.makeFutureWithTask {
            background.cancel()
            await background.value
        }
    }

    static let quiet = Logger(label: "hangar.postgres.query") { _ in SwiftLogNoOpLogHandler() }
}
