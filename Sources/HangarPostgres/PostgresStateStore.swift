import Foundation
package import HangarComponents
package import Logging
package import NIOCore
import PostgresNIO

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
/// `byteLimit` is not enforced and `usageByPartition` is empty: an exact per-partition count would need a usage
/// row updated in every write's transaction (serialising a tenant's writes on one row) and kept right by daprd
/// writing the same table, which it would not be. A tenant's `maxStateBytes` therefore does not bound PostgreSQL.
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

        package init(connectionString: PostgresConnectionString) {
            self.connectionString = connectionString
        }

        package var stateTable: String { tablePrefix + "state" }
        /// The metadata table row holding the migration level.
        package var migrationKey: String { "migrations-state-v2-\(tablePrefix)" }
        /// The metadata table row holding the last cleanup's time.
        package var cleanupKey: String { "last-cleanup-state-v2-\(tablePrefix)" }
    }

    package let configuration: Configuration
    package let backend: PostgresBackend
    private let logger: Logger
    /// The backend's pool and health loop and the cleanup loop. Started at open; cancelled and awaited by `close`,
    /// so it outlives no store (a component has no `Service` of its own to run it in).
    private let background: Task<Void, Never>

    package var features: StateFeatures { [.etag, .transactional, .ttl] }
    package var executesInline: Bool { false }
    /// Empty: see the type's documentation.
    package var usageByPartition: [String: Int] { [:] }
    package var backendProblem: String? { backend.backendProblem }

    private init(configuration: Configuration, backend: PostgresBackend, logger: Logger) {
        self.configuration = configuration
        self.backend = backend
        self.logger = logger
        let cleanupInterval = configuration.cleanupInterval
        let cleanup = PostgresStateSchema(configuration: configuration)
        background = Task {
            await withDiscardingTaskGroup { group in
                group.addTask { await backend.run() }
                if let cleanupInterval {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(for: cleanupInterval)
                            if Task.isCancelled { break }
                            do {
                                let deleted = try await backend.withConnection { connection in
                                    try await cleanup.cleanupExpired(connection, interval: cleanupInterval)
                                }
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
            try await PostgresStateSchema(configuration: configuration).migrate(backend: backend, logger: logger)
        } catch {
            try? await store.close(on: eventLoopGroup.next()).get()
            throw error
        }
        return store
    }

    private var schema: PostgresStateSchema { PostgresStateSchema(configuration: configuration) }

    /// Runs `body` on a pooled connection as a future on `eventLoop`.
    private func later<T: Sendable>(
        on eventLoop: any EventLoop, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) -> Eventual<T> {
        let backend = backend
        return .later(eventLoop.makeFutureWithTask { try await backend.withConnection(body) })
    }

    package func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
        let schema = schema
        let backendKey = configuration.keyLayout.backendKey(key)
        return later(on: eventLoop) { connection in try await schema.get(connection, key: backendKey) }
    }

    package func bulkGet(
        _ keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[Result<StateEntry?, StateStoreError>]> {
        if keys.isEmpty { return .ready(.success([])) }
        let schema = schema
        let backendKeys = keys.map(configuration.keyLayout.backendKey)
        let backend = backend
        return .later(
            eventLoop.makeFutureWithTask {
                do throws(StateStoreError) {
                    let found = try await backend.withConnection { connection in
                        try await schema.bulkGet(connection, keys: Array(Set(backendKeys)))
                    }
                    return backendKeys.map { .success(found[$0]) }
                } catch {
                    return backendKeys.map { _ in .failure(error) }
                }
            })
    }

    package func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        let schema = schema
        let layout = configuration.keyLayout
        return later(on: eventLoop) { connection in try await schema.set(connection, request, layout: layout) }
    }

    package func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        let schema = schema
        let layout = configuration.keyLayout
        return later(on: eventLoop) { connection in try await schema.delete(connection, request, layout: layout) }
    }

    /// One SQL transaction: `BEGIN`, the operations in order, `COMMIT`; the first failure rolls everything back.
    package func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        if operations.isEmpty { return .ready(.success(())) }
        let schema = schema
        let layout = configuration.keyLayout
        return later(on: eventLoop) { connection in
            try await schema.transact(connection, operations, layout: layout, logger: Self.quiet)
        }
    }

    /// Deletes every expired row now, whatever the last cleanup's time; how many there were.
    package func purgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let schema = schema
        return later(on: eventLoop) { connection in try await schema.purgeExpired(connection) }.future(on: eventLoop)
    }

    /// Dapr's cleanup: deletes the expired rows when the metadata table's last-cleanup row is older than
    /// `interval` (and moves it to now); nil when another process cleaned up within the interval.
    package func cleanupExpired(interval: Duration, on eventLoop: any EventLoop) -> EventLoopFuture<Int?> {
        let schema = schema
        return later(on: eventLoop) { connection in try await schema.cleanupExpired(connection, interval: interval) }
            .future(on: eventLoop)
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
