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
        let rows = try await connection.run(
            PostgresQuery(
                unsafeSQL: """
                    SELECT value, etag::text, expires_at FROM \(table)
                    WHERE key = $1 AND (expires_at IS NULL OR expires_at >= now())
                    """, binds: Self.binds([key])), logger: PostgresStateStore.quiet)
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
            PostgresQuery(
                unsafeSQL: """
                    SELECT key, value, etag::text, expires_at FROM \(table)
                    WHERE key = ANY($1) AND (expires_at IS NULL OR expires_at >= now())
                    """, binds: bindings), logger: PostgresStateStore.quiet)
        var found: [String: StateEntry] = [:]
        for (key, value, etag, expiresAt) in try rows.map({ try $0.decode((String, ByteBuffer, String, Date?).self) }) {
            found[key] = StateEntry(value: Data(buffer: value), etag: etag, expiresAt: expiresAt)
        }
        return found
    }

    // MARK: Writes

    /// Dapr's write: without an ETag (or with last-write) an upsert, which for first-write only replaces an expired
    /// row; with one an `UPDATE` of the unexpired row carrying it. No row written: `etagMismatch`.
    func set(_ connection: PostgresConnection, _ request: StateSetRequest, layout: StateKeyLayout) async throws {
        let key = layout.backendKey(request.key)
        var bindings = PostgresBindings()
        bindings.append(key)
        bindings.append(ByteBuffer(data: request.value))
        let expires: String
        if let ttl = request.ttl, ttl > .zero {
            expires = "now() + interval '\(ttl.milliseconds) milliseconds'"
        } else {
            expires = "NULL"
        }
        let sql: String
        if let etag = try Self.etag(request.etag, key: request.key, concurrency: request.concurrency) {
            bindings.append(etag)
            sql = """
                UPDATE \(table) SET value = $2, updated_at = now(), etag = gen_random_uuid(), expires_at = \(expires)
                WHERE key = $1 AND etag = $3 AND (expires_at IS NULL OR expires_at >= now())
                RETURNING 1
                """
        } else {
            let onlyExpired =
                request.concurrency == .firstWrite
                ? " WHERE (t.expires_at IS NOT NULL AND t.expires_at < now())" : ""
            sql = """
                INSERT INTO \(table) AS t (key, value, etag, expires_at)
                VALUES ($1, $2, gen_random_uuid(), \(expires))
                ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now(), etag = gen_random_uuid(),
                  expires_at = \(expires)\(onlyExpired)
                RETURNING 1
                """
        }
        let rows = try await connection.run(
            PostgresQuery(unsafeSQL: sql, binds: bindings), logger: PostgresStateStore.quiet)
        guard rows.count == 1 else { throw StateStoreError.etagMismatch(key: request.key) }
    }

    /// Without an ETag a delete always applies; with one the unexpired row must carry it.
    func delete(_ connection: PostgresConnection, _ request: StateDeleteRequest, layout: StateKeyLayout) async throws {
        let key = layout.backendKey(request.key)
        var bindings = PostgresBindings()
        bindings.append(key)
        if let etag = try Self.etag(request.etag, key: request.key, concurrency: request.concurrency) {
            bindings.append(etag)
            let rows = try await connection.run(
                PostgresQuery(
                    unsafeSQL: """
                        DELETE FROM \(table) WHERE key = $1 AND etag = $2
                        AND (expires_at IS NULL OR expires_at >= now()) RETURNING 1
                        """, binds: bindings), logger: PostgresStateStore.quiet)
            guard rows.count == 1 else { throw StateStoreError.etagMismatch(key: request.key) }
        } else {
            try await connection.run(
                PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE key = $1", binds: bindings),
                logger: PostgresStateStore.quiet)
        }
    }

    /// As Dapr's `Multi`: one operation alone, several in one transaction that the first failure rolls back.
    func transact(
        _ connection: PostgresConnection, _ operations: [StateOperation], layout: StateKeyLayout, logger: Logger
    ) async throws {
        func apply(_ operation: StateOperation) async throws {
            switch operation {
            case .set(let request): try await set(connection, request, layout: layout)
            case .delete(let request): try await delete(connection, request, layout: layout)
            }
        }
        if operations.count == 1 {
            try await apply(operations[0])
            return
        }
        try await connection.run("BEGIN", logger: logger)
        do {
            for operation in operations { try await apply(operation) }
        } catch {
            _ = try? await connection.run("ROLLBACK", logger: logger)
            throw error
        }
        try await connection.run("COMMIT", logger: logger)
    }

    // MARK: Expiry

    func purgeExpired(_ connection: PostgresConnection) async throws -> Int {
        try await connection.run(
            PostgresQuery(
                unsafeSQL: "DELETE FROM \(table) WHERE expires_at IS NOT NULL AND expires_at < now() RETURNING 1"),
            logger: PostgresStateStore.quiet
        ).count
    }

    /// Dapr's garbage collector: moves `last-cleanup-state-v2-<tablePrefix>` to now only if it is older than
    /// `interval` less 100 ms (so one of the processes sharing the table wins each interval), and if it moved,
    /// deletes the expired rows. Nil when it did not move.
    func cleanupExpired(_ connection: PostgresConnection, interval: Duration) async throws -> Int? {
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
        return try await purgeExpired(connection)
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
        try await eventLoop.flatSubmit { () -> EventLoopFuture<[PostgresRow]> in
            guard !self.isClosed else {
                return self.eventLoop.makeFailedFuture(StateStoreError.unavailable("PostgreSQL closed the connection"))
            }
            return self.query(query, logger: logger).map(\.rows)
        }.get()
    }
}
