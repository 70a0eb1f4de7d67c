import HangarComponents

/// The SQL text of the operations of one `state.postgresql` store, composed once when the store opens (table names
/// come from validated metadata; keys, values, sizes and limits are always bound parameters), so that no call
/// formats SQL.
///
/// **Byte accounting.** `<tablePrefix>hangar_usage` holds rows `(partition, shard, bytes)`: a partition's usage is
/// the sum of its rows. Every write adds its change in bytes to the row of shard `hashtext(key) & 15` in the
/// statement that writes the state row, so writers of one tenant hold one of 16 row locks until they commit, not
/// all the same one. The limit check reads the partition's sum as the statement's snapshot has it: writes to the
/// same partition committing concurrently do not see each other's bytes, which is the documented overshoot
/// (`PostgresStateStore`).
///
/// In a transaction of several operations the statements leave the usage table alone (`$apply` false) and report
/// their change and shard; the transaction adds them all at its end in one statement, shards in order
/// (`addUsage`). Locks are then always taken state rows first, usage rows last and in order, so two transactions
/// writing different keys of one tenant cannot deadlock on the usage rows.
struct PostgresStateStatements: Sendable {
    let get: String
    let bulkGet: String
    /// A write without an ETag (or with last-write): applies whatever the row holds.
    let setAny: String
    /// A first-write without an ETag: applies when the row is absent or expired.
    let setFirst: String
    /// A write with an ETag ($9): applies when the row is unexpired and carries it.
    let setMatching: String
    let deleteAny: String
    /// A delete with an ETag ($5).
    let deleteMatching: String
    /// Every expired row (in `keyLayout: dapr`, $1 is the namespace and $2 the bytes it adds to each key).
    let purgeAll: String
    /// One partition's expired rows ($1; in `keyLayout: dapr`, $2 the bytes the namespace adds to each key).
    let purgePartition: String
    /// Every partition's usage above 0.
    let usage: String
    /// Adds a transaction's changes: $1 partitions, $2 shards, $3 bytes, in the order given.
    let addUsage: String

    /// How many usage rows a partition's writes are spread over.
    static let shards = 16

    init(_ configuration: PostgresStateStore.Configuration) {
        let table = configuration.stateTable
        let usageTable = configuration.usageTable
        get = """
            SELECT value, etag::text, expires_at FROM \(table)
            WHERE key = $1 AND (expires_at IS NULL OR expires_at >= now())
            """
        bulkGet = """
            SELECT key, value, etag::text, expires_at FROM \(table)
            WHERE key = ANY($1) AND (expires_at IS NULL OR expires_at >= now())
            """
        let shard = "hashtext($1) & \(Self.shards - 1)"
        let addToShard = "ON CONFLICT (partition, shard) DO UPDATE SET bytes = u.bytes + EXCLUDED.bytes"
        // The key's row, locked: its size cannot change before this statement commits. FOR UPDATE waits for a
        // concurrent writer of the row and then sees its version (or nothing, if it deleted the row).
        let old = """
            old AS MATERIALIZED (
              SELECT octet_length(value)::bigint AS bytes, etag, (expires_at IS NULL OR expires_at >= now()) AS live
              FROM \(table) WHERE key = $1 FOR UPDATE
            )
            """
        // $1 key, $2 value, $3 the physical key's bytes, $4 partition, $5 limit (NULL: none), $6 TTL in ms
        // (NULL: none), $7 the bytes this transaction's earlier operations added to the partition and did not
        // apply yet, $8 whether to apply this one's to the usage table now, $9 ETag. The row is inserted when
        // absent (an insert that meets a row inserted meanwhile does nothing, and the caller runs the statement
        // again) or updated when present (it is locked).
        func set(allowed: String) -> String {
            let expires = "now() + $6::bigint * interval '1 millisecond'"
            return """
                WITH \(old), c AS MATERIALIZED (
                  SELECT EXISTS (SELECT 1 FROM old) AS present, (\(allowed)) AS allowed,
                    $3::bigint + octet_length($2) - COALESCE((SELECT $3::bigint + bytes FROM old), 0) AS delta,
                    (SELECT COALESCE(sum(bytes), 0) FROM \(usageTable) WHERE partition = $4)::bigint + $7::bigint
                      AS total
                ), d AS MATERIALIZED (
                  SELECT present, allowed, delta, total,
                    ($5::bigint IS NULL OR delta <= 0 OR GREATEST(total, 0) + delta <= $5::bigint) AS fits
                  FROM c
                ), ins AS (
                  INSERT INTO \(table) (key, value, etag, expires_at)
                  SELECT $1, $2, gen_random_uuid(), \(expires) FROM d WHERE NOT present AND allowed AND fits
                  ON CONFLICT (key) DO NOTHING RETURNING 1
                ), upd AS (
                  UPDATE \(table) SET value = $2, updated_at = now(), etag = gen_random_uuid(), expires_at = \(expires)
                  WHERE key = $1 AND (SELECT present AND allowed AND fits FROM d) RETURNING 1
                ), written AS (
                  SELECT 1 FROM ins UNION ALL SELECT 1 FROM upd
                ), acc AS (
                  INSERT INTO \(usageTable) AS u (partition, shard, bytes)
                  SELECT $4, \(shard), delta FROM d WHERE $8::boolean AND delta <> 0 AND EXISTS (SELECT 1 FROM written)
                  \(addToShard)
                )
                SELECT allowed, fits, delta, total, EXISTS (SELECT 1 FROM written), \(shard) FROM d
                """
        }
        setAny = set(allowed: "true")
        setFirst = set(allowed: "NOT COALESCE((SELECT live FROM old), false)")
        setMatching = set(allowed: "COALESCE((SELECT live AND etag = $9 FROM old), false)")

        // $1 key, $2 the physical key's bytes, $3 partition, $4 whether to apply the change to the usage table now
        // (as for a write), $5 ETag.
        func delete(allowed: String) -> String {
            """
            WITH \(old), d AS MATERIALIZED (
              SELECT EXISTS (SELECT 1 FROM old) AS present, (\(allowed)) AS allowed,
                COALESCE((SELECT $2::bigint + bytes FROM old), 0) AS bytes,
                (SELECT COALESCE(sum(bytes), 0) FROM \(usageTable) WHERE partition = $3)::bigint AS total
            ), del AS (
              DELETE FROM \(table) WHERE key = $1 AND (SELECT present AND allowed FROM d) RETURNING 1
            ), acc AS (
              INSERT INTO \(usageTable) AS u (partition, shard, bytes)
              SELECT $3, \(shard), -bytes FROM d WHERE $4::boolean AND EXISTS (SELECT 1 FROM del)
              \(addToShard)
            )
            SELECT allowed, CASE WHEN EXISTS (SELECT 1 FROM del) THEN bytes ELSE 0 END, total, \(shard) FROM d
            """
        }
        deleteAny = delete(allowed: "true")
        deleteMatching = delete(allowed: "COALESCE((SELECT live AND etag = $5 FROM old), false)")

        // The bytes of a deleted row and the partition it counted in, as the write that stored it computed them.
        let rowShard = "hashtext(key) & \(Self.shards - 1)"
        let partitionOfRow: String
        let bytesOfRow: String
        switch configuration.keyLayout {
        case .hangar:
            partitionOfRow = "split_part(key, '||', 1)"
            bytesOfRow = "octet_length(key)::bigint + octet_length(value)"
        case .dapr:
            partitionOfRow = "$1::text"
            bytesOfRow = "octet_length(key)::bigint + $2::bigint + octet_length(value)"
        }
        purgeAll = """
            WITH gone AS (
              DELETE FROM \(table) WHERE expires_at < now()
              RETURNING \(partitionOfRow) AS partition, \(rowShard) AS shard, \(bytesOfRow) AS bytes
            ), acc AS (
              INSERT INTO \(usageTable) AS u (partition, shard, bytes)
              SELECT partition, shard, -sum(bytes) FROM gone GROUP BY partition, shard ORDER BY partition, shard
              \(addToShard)
            )
            SELECT count(*) FROM gone
            """
        let inPartition = configuration.keyLayout == .hangar ? " AND split_part(key, '||', 1) = $1" : ""
        purgePartition = """
            WITH gone AS (
              DELETE FROM \(table) WHERE expires_at < now()\(inPartition)
              RETURNING \(rowShard) AS shard, \(bytesOfRow) AS bytes
            ), acc AS (
              INSERT INTO \(usageTable) AS u (partition, shard, bytes)
              SELECT $1::text, shard, -sum(bytes) FROM gone GROUP BY shard ORDER BY shard
              \(addToShard)
            )
            SELECT count(*) FROM gone
            """
        usage = """
            SELECT partition, sum(bytes)::bigint FROM \(usageTable) GROUP BY partition HAVING sum(bytes) > 0
            """
        addUsage = """
            INSERT INTO \(usageTable) AS u (partition, shard, bytes)
            SELECT * FROM unnest($1::text[], $2::integer[], $3::bigint[])
            \(addToShard)
            """
    }
}
