import Foundation
import HangarComponents
import Logging
import NIOCore
import PostgresNIO

/// The SQL of `state.postgresql` v2, as components-contrib's `state/postgresql/v2/postgresql.go` and
/// `common/component/sql/migrations/postgres` run it: the same tables, migration levels, metadata rows and
/// statements, so that Hangar and daprd can share one database. Table names come from validated metadata
/// (`PostgresStateStore+Descriptor`), never from callers; keys, values and ETags are always bound parameters.
struct PostgresStateSchema: Sendable {
    let configuration: PostgresStateStore.Configuration
    let statements: PostgresStateStatements

    init(configuration: PostgresStateStore.Configuration) {
        self.configuration = configuration
        statements = PostgresStateStatements(configuration)
    }

    var table: String { configuration.stateTable }
    var metadataTable: String { configuration.metadataTableName }

    // MARK: Migrations

    /// Dapr's migrations: the metadata table (`CREATE TABLE IF NOT EXISTS`, retried on the races of concurrent
    /// creations), the `lock` row locked `FOR UPDATE` in a transaction that is always rolled back (on a connection of
    /// its own, outside the pool), then each migration above the level in `migrations-state-v2-<tablePrefix>`,
    /// raising it after each.
    func migrate(backend: PostgresBackend, logger: Logger) async throws {
        let metadataTable = metadataTable
        for attempt in 1...3 {
            do {
                _ = try await backend.withConnection { connection in
                    try await connection.run(
                        PostgresQuery(
                            unsafeSQL:
                                "CREATE TABLE IF NOT EXISTS \(metadataTable) (key text NOT NULL PRIMARY KEY, value text NOT NULL)"
                        ), logger: PostgresStateStore.quiet)
                }
                break
            } catch {
                // Concurrent `CREATE TABLE IF NOT EXISTS` of the same table can fail with a unique violation on
                // the catalog (23505) or as a duplicate of its row type (42710) or table (42P07).
                guard attempt < 3, case .backend(let message) = error,
                    ["SQLSTATE 23505", "SQLSTATE 42710", "SQLSTATE 42P07"].contains(where: { message.contains($0) })
                else {
                    throw error
                }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        _ = try await backend.withConnection { connection in
            try await connection.run(
                PostgresQuery(
                    unsafeSQL:
                        "INSERT INTO \(metadataTable) (key, value) VALUES ($1, 'lock') ON CONFLICT (key) DO NOTHING",
                    binds: Self.binds(["lock"])), logger: PostgresStateStore.quiet)
        }
        try await backend.withDedicatedConnection { lockConnection in
            try await lockConnection.run("BEGIN", logger: PostgresStateStore.quiet)
            do {
                try await lockConnection.run(
                    PostgresQuery(
                        unsafeSQL: "SELECT value FROM \(metadataTable) WHERE key = $1 FOR UPDATE",
                        binds: Self.binds(["lock"])), logger: PostgresStateStore.quiet)
                try await runMigrations(backend: backend, logger: logger)
            } catch {
                _ = try? await lockConnection.run("ROLLBACK", logger: PostgresStateStore.quiet)
                throw error
            }
            try await lockConnection.run("ROLLBACK", logger: PostgresStateStore.quiet)
        }
    }

    private func runMigrations(backend: PostgresBackend, logger: Logger) async throws {
        let schema = self
        let levelText = try await backend.withConnection { connection -> String? in
            let rows = try await connection.run(
                PostgresQuery(
                    unsafeSQL: "SELECT value FROM \(schema.metadataTable) WHERE key = $1",
                    binds: Self.binds([schema.configuration.migrationKey])), logger: PostgresStateStore.quiet)
            for value in try rows.map({ try $0.decode(String.self) }) { return value }
            return nil
        }
        let level: Int
        if let levelText {
            guard let parsed = Int(levelText), parsed >= 0 else {
                throw StateStoreError.backend("invalid migration level found in metadata table: \(levelText)")
            }
            level = parsed
        } else {
            level = 0
        }
        let migrations = [createTable, addRowID]
        for index in level..<max(level, migrations.count) {
            logger.info("performing state.postgresql migration \(index + 1)", metadata: ["table": "\(table)"])
            try await backend.withConnection { connection in
                try await migrations[index](connection)
                try await connection.run(
                    PostgresQuery(
                        unsafeSQL:
                            "INSERT INTO \(schema.metadataTable) (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2",
                        binds: Self.binds([schema.configuration.migrationKey, String(index + 1)])),
                    logger: PostgresStateStore.quiet)
            }
        }
        try await migrateUsage(backend: backend, logger: logger)
    }

    /// Hangar's own migration, at its own level (`migrations-hangar-usage-<tablePrefix>`, so Dapr's level stays
    /// Dapr's), under the same lock: the usage table, and, when this migration creates it, in the same transaction,
    /// the rows already in the state table counted once. That count reads keys as `keyLayout: hangar` does (the
    /// partition is what comes before the first `||`); a store in `keyLayout: dapr` cannot tell its namespace here,
    /// so it creates the table empty and rows present before it are not counted.
    private func migrateUsage(backend: PostgresBackend, logger: Logger) async throws {
        let schema = self
        let level = try await backend.withConnection { connection -> String? in
            let rows = try await connection.run(
                PostgresQuery(
                    unsafeSQL: "SELECT value FROM \(schema.metadataTable) WHERE key = $1",
                    binds: Self.binds([schema.configuration.usageMigrationKey])), logger: PostgresStateStore.quiet)
            return try rows.first?.decode(String.self)
        }
        guard level == nil || level == "0" else { return }
        let usageTable = configuration.usageTable
        logger.info("creating the byte accounting table", metadata: ["table": "\(usageTable)"])
        try await backend.withConnection { connection in
            let quiet = PostgresStateStore.quiet
            try await connection.run("BEGIN", logger: quiet)
            do {
                // Counting a large table may take longer than the component's statement timeout.
                try await connection.run("SET LOCAL statement_timeout = 0", logger: quiet)
                let exists = try await connection.run(
                    PostgresQuery(
                        unsafeSQL: "SELECT to_regclass($1) IS NOT NULL", binds: Self.binds([usageTable])),
                    logger: quiet
                ).first?.decode(Bool.self) ?? false
                if !exists {
                    try await connection.run(
                        PostgresQuery(
                            unsafeSQL: """
                                CREATE TABLE \(usageTable) (
                                  partition text NOT NULL,
                                  shard integer NOT NULL,
                                  bytes bigint NOT NULL,
                                  PRIMARY KEY (partition, shard)
                                )
                                """), logger: quiet)
                    if schema.configuration.keyLayout == .hangar {
                        try await connection.run(
                            PostgresQuery(
                                unsafeSQL: """
                                    INSERT INTO \(usageTable) (partition, shard, bytes)
                                    SELECT split_part(key, '||', 1), 0, sum(octet_length(key)::bigint + octet_length(value))
                                    FROM \(schema.table) GROUP BY 1
                                    """), logger: quiet)
                    }
                }
                try await connection.run(
                    PostgresQuery(
                        unsafeSQL:
                            "INSERT INTO \(schema.metadataTable) (key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE SET value = '1'",
                        binds: Self.binds([schema.configuration.usageMigrationKey])),
                    logger: quiet)
                try await connection.run("COMMIT", logger: quiet)
            } catch {
                _ = try? await connection.run("ROLLBACK", logger: quiet)
                throw error
            }
        }
    }

    /// Migration 1: the state table and its `expires_at` index.
    private func createTable(_ connection: PostgresConnection) async throws {
        do {
            try await connection.run(
                PostgresQuery(
                    unsafeSQL: """
                        CREATE TABLE IF NOT EXISTS \(table) (
                          key text NOT NULL PRIMARY KEY,
                          value bytea NOT NULL,
                          etag uuid NOT NULL DEFAULT gen_random_uuid(),
                          created_at timestamp with time zone NOT NULL DEFAULT now(),
                          updated_at timestamp with time zone,
                          expires_at timestamp with time zone
                        )
                        """), logger: PostgresStateStore.quiet)
            try await connection.run(
                PostgresQuery(unsafeSQL: "CREATE INDEX ON \(table) (expires_at)"), logger: PostgresStateStore.quiet)
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" {
            // Another process created it at the same moment (Dapr ignores this too).
        }
    }

    /// Migration 2: `row_id`, a unique identity column (Dapr's KeysLike pages by it), backfilled in creation order.
    private func addRowID(_ connection: PostgresConnection) async throws {
        let quiet = PostgresStateStore.quiet
        var resolved: (schema: String, table: String, qualified: String, registered: String)?
        let rows = try await connection.run(
            PostgresQuery(
                unsafeSQL: """
                    SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname), n.nspname || '.' || c.relname
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = to_regclass($1)
                    """, binds: Self.binds([table])), logger: quiet)
        for row in try rows.map({ try $0.decode((String, String, String, String).self) }) {
            resolved = (row.0, row.1, row.2, row.3)
        }
        guard let resolved else { throw StateStoreError.backend("table \(table) not found") }
        let qualified = resolved.qualified

        var hasColumn = false
        for exists in try await connection.run(
            PostgresQuery(
                unsafeSQL:
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = 'row_id' AND NOT attisdropped)",
                binds: Self.binds([table])), logger: quiet
        ).map({ try $0.decode(Bool.self) }) {
            hasColumn = exists
        }
        if !hasColumn {
            try await connection.run(
                PostgresQuery(unsafeSQL: "ALTER TABLE \(qualified) ADD COLUMN row_id BIGINT"), logger: quiet)
        }
        try await connection.run(
            PostgresQuery(
                unsafeSQL: """
                    WITH ranked AS (
                      SELECT key, ROW_NUMBER() OVER (ORDER BY created_at ASC, key ASC) AS rn
                      FROM \(qualified) WHERE row_id IS NULL
                    )
                    UPDATE \(qualified) AS t SET row_id = r.rn FROM ranked r WHERE r.key = t.key
                    """), logger: quiet)
        try await connection.run(
            PostgresQuery(unsafeSQL: "ALTER TABLE \(qualified) ALTER COLUMN row_id SET NOT NULL"), logger: quiet)
        var isIdentity = false
        for identity in try await connection.run(
            PostgresQuery(
                unsafeSQL: """
                    SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = $1
                    AND table_name = $2 AND column_name = 'row_id' AND is_identity = 'YES')
                    """, binds: Self.binds([resolved.schema, resolved.table])), logger: quiet
        ).map({ try $0.decode(Bool.self) }) {
            isIdentity = identity
        }
        if !isIdentity {
            try await connection.run(
                PostgresQuery(
                    unsafeSQL: "ALTER TABLE \(qualified) ALTER COLUMN row_id ADD GENERATED BY DEFAULT AS IDENTITY"),
                logger: quiet)
        }
        var sequence: String?
        for name in try await connection.run(
            PostgresQuery(
                unsafeSQL: "SELECT pg_get_serial_sequence($1, 'row_id')", binds: Self.binds([resolved.registered])),
            logger: quiet
        ).map({ try $0.decode(String?.self) }) {
            sequence = name
        }
        if let sequence, !sequence.isEmpty {
            try await connection.run(
                PostgresQuery(
                    unsafeSQL: "SELECT setval($1, COALESCE((SELECT MAX(row_id) FROM \(qualified)), 0) + 1, false)",
                    binds: Self.binds([sequence])), logger: quiet)
        }
        let index = "\"" + (resolved.table + "_row_id_uidx").replacingOccurrences(of: "\"", with: "\"\"") + "\""
        try await connection.run(
            PostgresQuery(unsafeSQL: "CREATE UNIQUE INDEX IF NOT EXISTS \(index) ON \(qualified) (row_id)"),
            logger: quiet)
    }

    // MARK: Reads

    func get(_ connection: PostgresConnection, key: String) async throws -> StateEntry? {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(key)
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: statements.get, binds: bindings), logger: PostgresStateStore.quiet)
        for (value, etag, expiresAt) in try rows.map({ try $0.decode((ByteBuffer, String, Date?).self) }) {
            return StateEntry(value: Data(buffer: value), etag: etag, expiresAt: expiresAt)
        }
        return nil
    }

    /// One query for every key (`key = ANY($1)`); the entries found, by key.
    func bulkGet(_ connection: PostgresConnection, keys: [String]) async throws -> [String: StateEntry] {
        var bindings = PostgresBindings()
        bindings.append(keys)
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: statements.bulkGet, binds: bindings), logger: PostgresStateStore.quiet)
        var found: [String: StateEntry] = [:]
        for (key, value, etag, expiresAt) in try rows.map({ try $0.decode((String, ByteBuffer, String, Date?).self) }) {
            found[key] = StateEntry(value: Data(buffer: value), etag: etag, expiresAt: expiresAt)
        }
        return found
    }

    // MARK: Writes

    /// A partition's usage as a write left it: the sum of its shard rows as the write's statement saw them (what
    /// had committed before it began, and its own change), never below 0.
    struct Usage: Sendable, Hashable {
        var partition: String
        var bytes: Int
    }

    /// What one operation changed: the partition's usage after it, and its change in bytes to the usage shard.
    struct Change: Sendable, Hashable {
        var usage: Usage
        var delta: Int
        var shard: Int32
    }

    /// Dapr's write with its byte accounting, in one statement (`Statements.set`): the key's row is locked, the
    /// ETag rule applied (without an ETag or with last-write the row is written whatever it holds; with first-write
    /// only when absent or expired; with an ETag only when unexpired and carrying it), the byte limit checked, then
    /// the row and the key's usage shard written together. `etagMismatch` when the ETag rule refuses,
    /// `byteLimitExceeded` when the limit does.
    ///
    /// The partition and the item's size come from the request's physical key (`ns||app||key`) in either key
    /// layout, so the numbers match the other stores'.
    ///
    /// In a transaction, `pending` is what its earlier operations added to the partition and `apply` false: the
    /// change is then left for `transact` to add at the end (`PostgresStateStatements`).
    func set(
        _ connection: PostgresConnection, _ request: StateSetRequest, layout: StateKeyLayout, pending: Int = 0,
        apply: Bool = true
    ) async throws -> Change {
        let partition = StatePartition.of(request.key)
        let etag = try Self.etag(request.etag, key: request.key, concurrency: request.concurrency)
        var bindings = PostgresBindings(capacity: 9)
        bindings.append(layout.backendKey(request.key))
        bindings.append(ByteBuffer(data: request.value))
        bindings.append(Int64(request.key.utf8.count))
        bindings.append(partition)
        bindings.append(request.byteLimit.map(Int64.init))
        bindings.append(request.ttl.flatMap { $0 > .zero ? $0.milliseconds : nil })
        bindings.append(Int64(pending))
        bindings.append(apply)
        let sql: String
        if let etag {
            bindings.append(etag)
            sql = statements.setMatching
        } else if request.concurrency == .firstWrite {
            sql = statements.setFirst
        } else {
            sql = statements.setAny
        }
        let query = PostgresQuery(unsafeSQL: sql, binds: bindings)
        // Another writer's insert of the same key, committed after this statement's snapshot, makes this insert do
        // nothing; the statement then runs again, and sees (and locks) that row.
        for _ in 0..<3 {
            let rows = try await connection.run(query, logger: PostgresStateStore.quiet)
            guard let row = rows.first else { throw StateStoreError.backend("PostgreSQL: the write returned nothing") }
            let (allowed, fits, delta, total, written, shard) = try row.decode(
                (Bool, Bool, Int64, Int64, Bool, Int32).self)
            if written {
                return Change(
                    usage: Usage(partition: partition, bytes: max(0, Int(total + delta))), delta: Int(delta),
                    shard: shard)
            }
            guard allowed else { throw StateStoreError.etagMismatch(key: request.key) }
            guard fits else {
                throw StateStoreError.byteLimitExceeded(
                    partition: partition, usage: max(0, Int(total)) + Int(delta), limit: request.byteLimit ?? 0)
            }
        }
        throw StateStoreError.unavailable("PostgreSQL: the write of a key kept meeting concurrent inserts of it")
    }

    /// Without an ETag a delete always applies; with one the unexpired row must carry it. The row's bytes leave
    /// the key's usage shard in the same statement.
    func delete(
        _ connection: PostgresConnection, _ request: StateDeleteRequest, layout: StateKeyLayout, pending: Int = 0,
        apply: Bool = true
    ) async throws -> Change {
        let partition = StatePartition.of(request.key)
        var bindings = PostgresBindings(capacity: 5)
        bindings.append(layout.backendKey(request.key))
        bindings.append(Int64(request.key.utf8.count))
        bindings.append(partition)
        bindings.append(apply)
        let sql: String
        if let etag = try Self.etag(request.etag, key: request.key, concurrency: request.concurrency) {
            bindings.append(etag)
            sql = statements.deleteMatching
        } else {
            sql = statements.deleteAny
        }
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: sql, binds: bindings), logger: PostgresStateStore.quiet)
        guard let row = rows.first else { throw StateStoreError.backend("PostgreSQL: the delete returned nothing") }
        let (allowed, bytes, total, shard) = try row.decode((Bool, Int64, Int64, Int32).self)
        guard allowed else { throw StateStoreError.etagMismatch(key: request.key) }
        return Change(
            usage: Usage(partition: partition, bytes: max(0, Int(total) + pending - Int(bytes))), delta: -Int(bytes),
            shard: shard)
    }

    /// As Dapr's `Multi`: one operation alone, several in one transaction that the first failure rolls back, their
    /// changes to the usage table added at its end, shards in order. The usage of each partition written, as the
    /// last operation on it saw it.
    func transact(
        _ connection: PostgresConnection, _ operations: [StateOperation], layout: StateKeyLayout, logger: Logger
    ) async throws -> [Usage] {
        if operations.count == 1 {
            switch operations[0] {
            case .set(let request): return [try await set(connection, request, layout: layout).usage]
            case .delete(let request): return [try await delete(connection, request, layout: layout).usage]
            }
        }
        try await connection.run("BEGIN", logger: logger)
        var usage: [Usage] = []
        do {
            var pending: [String: Int] = [:]
            var shards: [ShardKey: Int] = [:]
            for operation in operations {
                let partition = StatePartition.of(operation.key)
                let before = pending[partition, default: 0]
                let change: Change
                switch operation {
                case .set(let request):
                    change = try await set(connection, request, layout: layout, pending: before, apply: false)
                case .delete(let request):
                    change = try await delete(connection, request, layout: layout, pending: before, apply: false)
                }
                pending[partition] = before + change.delta
                shards[ShardKey(partition: partition, shard: change.shard), default: 0] += change.delta
                if let index = usage.firstIndex(where: { $0.partition == partition }) {
                    usage[index] = change.usage
                } else {
                    usage.append(change.usage)
                }
            }
            let ordered = shards.filter { $0.value != 0 }.sorted { $0.key < $1.key }
            if !ordered.isEmpty {
                var bindings = PostgresBindings(capacity: 3)
                bindings.append(ordered.map(\.key.partition))
                bindings.append(ordered.map(\.key.shard))
                bindings.append(ordered.map { Int64($0.value) })
                try await connection.run(
                    PostgresQuery(unsafeSQL: statements.addUsage, binds: bindings), logger: PostgresStateStore.quiet)
            }
        } catch {
            _ = try? await connection.run("ROLLBACK", logger: logger)
            throw error
        }
        try await connection.run("COMMIT", logger: logger)
        return usage
    }

    /// A usage row, ordered as locks on them are taken.
    private struct ShardKey: Hashable, Comparable {
        var partition: String
        var shard: Int32

        static func < (lhs: Self, rhs: Self) -> Bool {
            lhs.partition.utf8.lexicographicallyPrecedes(rhs.partition.utf8)
                || (lhs.partition == rhs.partition && lhs.shard < rhs.shard)
        }
    }

    // MARK: Expiry and usage

    /// Deletes every expired row now, taking their bytes off the usage table in the same statement; how many there
    /// were. In `keyLayout: dapr` the rows' partition is `namespace` (every row is that namespace's); when it is
    /// not known yet (nil: no request served since the store opened) nothing is deleted.
    func purgeExpired(_ connection: PostgresConnection, namespace: String?) async throws -> Int {
        var bindings = PostgresBindings()
        switch configuration.keyLayout {
        case .hangar: break
        case .dapr:
            guard let namespace else { return 0 }
            bindings.append(namespace)
            bindings.append(Int64(namespace.utf8.count + StatePartition.separator.utf8.count))
        }
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: statements.purgeAll, binds: bindings), logger: PostgresStateStore.quiet)
        return try rows.first.map { Int(try $0.decode(Int64.self)) } ?? 0
    }

    /// Deletes `partition`'s expired rows (before a write over its limit is tried again), taking their bytes off
    /// the usage table in the same statement; how many there were.
    func purgeExpired(_ connection: PostgresConnection, partition: String) async throws -> Int {
        var bindings = PostgresBindings()
        bindings.append(partition)
        if configuration.keyLayout == .dapr {
            bindings.append(Int64(partition.utf8.count + StatePartition.separator.utf8.count))
        }
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: statements.purgePartition, binds: bindings), logger: PostgresStateStore.quiet)
        return try rows.first.map { Int(try $0.decode(Int64.self)) } ?? 0
    }

    /// Dapr's garbage collector: moves `last-cleanup-state-v2-<tablePrefix>` to now only if it is older than
    /// `interval` less 100 ms (so one of the processes sharing the table wins each interval), and if it moved,
    /// deletes the expired rows. Nil when it did not move (or, in `keyLayout: dapr`, while the namespace is unknown).
    func cleanupExpired(
        _ connection: PostgresConnection, interval: Duration, namespace: String?
    ) async throws -> Int? {
        if configuration.keyLayout == .dapr, namespace == nil { return nil }
        var bindings = PostgresBindings()
        bindings.append(configuration.cleanupKey)
        bindings.append(Int64(interval.milliseconds - 100))
        let moved = try await (
            connection.run(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO \(metadataTable) (key, value) VALUES ($1, now()::text)
                        ON CONFLICT (key) DO UPDATE SET value = now()::text
                        WHERE (EXTRACT('epoch' FROM now() - \(metadataTable).value::timestamp with time zone) * 1000)::bigint > $2
                        RETURNING 1
                        """, binds: bindings), logger: PostgresStateStore.quiet)).count
        guard moved == 1 else { return nil }
        return try await purgeExpired(connection, namespace: namespace)
    }

    /// Every partition's usage in the usage table (partitions summing to 0 or less left out).
    func usage(_ connection: PostgresConnection) async throws -> [String: Int] {
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: statements.usage), logger: PostgresStateStore.quiet)
        var usage: [String: Int] = [:]
        for (partition, bytes) in try rows.map({ try $0.decode((String, Int64).self) }) {
            usage[partition] = Int(bytes)
        }
        return usage
    }

    // MARK: Helpers

    /// The ETag a write must match, as a UUID; nil when it has none to match (none given, empty, or last-write).
    /// An ETag that is not a UUID cannot be one of ours: `invalidETag`.
    static func etag(_ given: String?, key: String, concurrency: StateConcurrency) throws -> UUID? {
        guard concurrency != .lastWrite, let given, !given.isEmpty else { return nil }
        guard let uuid = UUID(uuidString: given) else { throw StateStoreError.invalidETag(key: key, etag: given) }
        return uuid
    }

    static func binds(_ values: [String]) -> PostgresBindings {
        var bindings = PostgresBindings()
        for value in values { bindings.append(value) }
        return bindings
    }

}

extension PostgresConnection {
    /// Runs one statement and collects its rows. postgres-nio drops a query written to a connection that has just
    /// closed (the write fails with no one to tell, and the result never arrives: seen when the server is killed
    /// under load), so the query is written on the connection's event loop right after checking it is open: the
    /// check and the write happen in one turn of the loop, and once written the connection fails it if it closes.
    @discardableResult
    func run(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRow] {
        let sent: EventLoopFuture<[PostgresRow]>
        if eventLoop.inEventLoop {
            // Already on the connection's loop (the call runs there): no hop.
            guard !isClosed else { throw StateStoreError.unavailable("PostgreSQL closed the connection") }
            sent = self.query(query, logger: logger).map(\.rows)
        } else {
            sent = eventLoop.flatSubmit { () -> EventLoopFuture<[PostgresRow]> in
                guard !self.isClosed else {
                    return self.eventLoop.makeFailedFuture(
                        StateStoreError.unavailable("PostgreSQL closed the connection"))
                }
                return self.query(query, logger: logger).map(\.rows)
            }
        }
        return try await sent.get()
    }
}
