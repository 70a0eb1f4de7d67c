import Foundation
package import HangarComponents
package import Logging
package import NIOCore
package import NIOPosix
import Synchronization
import HangarSync

/// `state.sqlite`: a state store in one SQLite file (or in memory), with ETags, transactions and TTLs.
///
/// SQLite's calls block, so every write runs as one closure on a `NIOThreadPool` and completes its future on the
/// caller's event loop. Writes go through a single writer connection (SQLite serialises writers anyway), each in
/// its own `BEGIN IMMEDIATE` transaction. Reads asked for on an event loop are served there, at once (`.ready`), from
/// that loop's own WAL reader connection, while the database's pages are all in the kernel's page cache and no read
/// on a loop has recently been slow (`SQLiteInlineReads` explains the choice and its limits); other reads use a small
/// pool of reader connections on the thread pool, which WAL also lets proceed while a write is in progress. An
/// in-memory database cannot be shared between connections, so there every operation uses the writer (reads inline
/// when it is free).
///
/// ETags follow `StateETag`: a store-wide counter kept in `<table>_metadata` and advanced inside each write
/// transaction, so an ETag is never handed out twice, even across deletions and restarts.
///
/// Byte accounting (`usageByPartition`) is kept in memory: computed from the table when the store opens, changed by
/// each write transaction (from the sizes of the rows it replaces) only once it has committed. It assumes this store
/// is the table's only writer. Expired rows count until they are deleted: by `purgeExpired(on:)` (periodically, with
/// `cleanupInterval`), by a write to their key, or, for the partition concerned, before a write is refused with
/// `byteLimitExceeded`, so that a partition is never refused because of items that have already expired.
package final class SQLiteStateStore: TransactionalStateStore {
    /// Where and how the store keeps its data.
    package struct Configuration: Sendable, Hashable {
        /// A file path (parent directories are created), `:memory:`, or a SQLite `file:` URI.
        package var path: String
        /// The table holding the items; `<tableName>_metadata` is created next to it. Must match
        /// `^[A-Za-z_][A-Za-z0-9_]{0,62}$`.
        package var tableName: String
        /// How long a connection waits for a lock held by another connection or process before failing.
        package var busyTimeout: Duration
        /// How often expired items are deleted; nil disables the periodic cleanup (reads still hide them).
        package var cleanupInterval: Duration?
        /// A read served on an event loop that takes longer turns such reads off for a while
        /// (`SQLiteInlineReads`); nil never reads on an event loop (every read hops to the thread pool).
        package var inlineReadBudget: Duration?
        /// How long reads stay off the event loops after the first slow one (doubling on more, up to 64 s), and
        /// how often a database whose files are not all in the page cache is checked again.
        package var inlineReadRetry: Duration

        package init(
            path: String, tableName: String = "state", busyTimeout: Duration = .seconds(2),
            cleanupInterval: Duration? = .seconds(3600), inlineReadBudget: Duration? = .milliseconds(1),
            inlineReadRetry: Duration = .seconds(1)
        ) {
            self.path = path
            self.tableName = tableName
            self.busyTimeout = busyTimeout
            self.cleanupInterval = cleanupInterval
            self.inlineReadBudget = inlineReadBudget
            self.inlineReadRetry = inlineReadRetry
        }
    }

    /// A configuration the store refuses at initialisation.
    package enum ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
        /// The table name is not a plain SQL identifier of at most 63 characters.
        case invalidTableName(String)
        /// The path is empty.
        case emptyPath
        /// The cleanup interval is zero or negative.
        case invalidCleanupInterval(Duration)
        /// The inline read budget is negative or the retry interval not positive.
        case invalidInlineReads(budget: Duration, retry: Duration)

        package var description: String {
            switch self {
            case .invalidTableName(let name):
                "invalid SQLite table name '\(name)': it must match ^[A-Za-z_][A-Za-z0-9_]{0,62}$"
            case .emptyPath: "the SQLite path is empty"
            case .invalidCleanupInterval(let interval): "the cleanup interval must be positive, not \(interval)"
            case .invalidInlineReads(let budget, let retry):
                "the inline read budget must not be negative (\(budget)) and the retry interval must be positive "
                    + "(\(retry))"
            }
        }
    }

    /// One connection and the lock that gives one thread at a time access to it; nil once closed.
    final class ConnectionSlot: Sendable {
        let connection: Locked<SQLiteConnection?>

        init(_ connection: consuming sending SQLiteConnection) {
            self.connection = Locked(connection)
        }
    }

    /// The statements the store runs, with the table names filled in once.
    private struct Queries: Sendable {
        let select: String
        let selectExisting: String
        let upsert: String
        let delete: String
        let purge: String
        let purgedUsage: String
        let purgePartition: String
        let purgedPartitionUsage: String
        let usage: String
        let readCounter: String
        let writeCounter: String

        init(table: String) {
            let items = "\"\(table)\""
            let metadata = "\"\(table)_metadata\""
            let live = "(expires_at IS NULL OR expires_at > ?2)"
            // An item's bytes, as `StatePartition` counts them: values are always bound as blobs, so length(value)
            // is their size in bytes (and does not read them).
            let bytes = "length(CAST(key AS BLOB)) + length(value)"
            // `StatePartition.of` in SQL: instr and substr count characters alike.
            let partition = "CASE WHEN instr(key, '||') > 0 THEN substr(key, 1, instr(key, '||') - 1) ELSE key END"
            // A partition's keys: the partition itself, or anything starting with `<partition>||`, that is from
            // ?2 = `<partition>||` up to, excluded, ?3 = `<partition>|}`.
            let inPartition = "(key = ?1 OR (key >= ?2 AND key < ?3))"
            select = "SELECT value, version, expires_at FROM \(items) WHERE key = ?1 AND \(live)"
            selectExisting = "SELECT version, expires_at, length(value) FROM \(items) WHERE key = ?1"
            upsert = """
                INSERT INTO \(items) (key, value, version, expires_at) VALUES (?1, ?2, ?3, ?4)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version,
                expires_at = excluded.expires_at
                """
            delete = "DELETE FROM \(items) WHERE key = ?1"
            purge = "DELETE FROM \(items) WHERE expires_at <= ?1"
            purgedUsage = "SELECT \(partition), SUM(\(bytes)) FROM \(items) WHERE expires_at <= ?1 GROUP BY 1"
            purgePartition = "DELETE FROM \(items) WHERE \(inPartition) AND expires_at <= ?4"
            purgedPartitionUsage = """
                SELECT COUNT(*), COALESCE(SUM(\(bytes)), 0) FROM \(items) WHERE \(inPartition) AND expires_at <= ?4
                """
            usage = "SELECT \(partition), SUM(\(bytes)) FROM \(items) GROUP BY 1"
            // Falls back to the highest stored version should the counter row ever be missing.
            readCounter = """
                SELECT COALESCE((SELECT CAST(value AS INTEGER) FROM \(metadata) WHERE key = 'etag'),
                (SELECT MAX(version) FROM \(items)), 0)
                """
            writeCounter = """
                INSERT INTO \(metadata) (key, value) VALUES ('etag', ?1)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value
                """
        }

        static func schema(table: String) -> String {
            let items = "\"\(table)\""
            let metadata = "\"\(table)_metadata\""
            return """
                CREATE TABLE IF NOT EXISTS \(items) (
                    key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL, expires_at INTEGER
                ) WITHOUT ROWID;
                CREATE INDEX IF NOT EXISTS "\(table)_expires_at" ON \(items) (expires_at) WHERE expires_at IS NOT NULL;
                CREATE TABLE IF NOT EXISTS \(metadata) (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
                INSERT OR IGNORE INTO \(metadata) (key, value)
                    VALUES ('etag', CAST((SELECT COALESCE(MAX(version), 0) FROM \(items)) AS TEXT));
                """
        }
    }

    /// Reader connections opened next to the writer for a file database.
    private static let readerCount = 4

    /// ETags, transactions and TTLs.
    package let features: StateFeatures = [.etag, .transactional, .ttl]
    /// False: writes, and reads that cannot be served on the event loop, run on the thread pool and complete their
    /// futures later.
    package var executesInline: Bool { false }
    /// The configuration the store was opened with.
    package let configuration: Configuration

    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let queries: Queries
    private let writer: ConnectionSlot
    /// Empty for an in-memory database, whose reads use the writer.
    private let readers: [ConnectionSlot]
    /// Reads served on the caller's event loop; nil when `inlineReadBudget` is nil or the database is not in WAL mode.
    let inlineReads: SQLiteInlineReads?
    private let nextReader = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)
    private let cleanup = Locked<RepeatedTask?>(nil)
    /// Bytes per partition as last committed; changed only by the writer, after a commit.
    private let usage: Locked<[String: Int]>

    /// Opens the database (blocking: meant for start-up), creating the file, its parent directories and the tables
    /// when missing, and schedules the periodic cleanup of expired items on `eventLoopGroup`.
    package init(
        configuration: Configuration, threadPool: NIOThreadPool, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) throws {
        try Self.validate(configuration)
        self.configuration = configuration
        self.threadPool = threadPool
        self.queries = Queries(table: configuration.tableName)
        var logger = logger
        logger[metadataKey: "sqlite.path"] = "\(configuration.path)"
        logger[metadataKey: "sqlite.table"] = "\(configuration.tableName)"
        self.logger = logger

        let path = configuration.path
        let inMemory = SQLiteConnection.isInMemory(path)
        if let problem = SQLiteConnection.createDirectory(for: path) { throw StateStoreError.backend(problem) }

        do {
            let writer = try SQLiteConnection(path: path, busyTimeout: configuration.busyTimeout)
            let journalMode = try writer.enableWAL()
            try writer.execute("PRAGMA synchronous = NORMAL")
            try writer.execute(Queries.schema(table: configuration.tableName))
            // Bytes per partition, for `usageByPartition` and byte limits: from here on, counted as writes commit.
            let usage = try writer.withStatement(queries.usage) { statement in
                var usage: [String: Int] = [:]
                while try statement.step() { Self.add(Int(statement.int64(1)), to: statement.text(0), in: &usage) }
                return usage
            }
            self.usage = Locked(usage)
            if !inMemory && journalMode.lowercased() != "wal" {
                logger.warning(
                    "SQLite refused WAL mode: reads will wait for writes",
                    metadata: ["sqlite.journal_mode": "\(journalMode)"])
            }
            logger.debug("opened SQLite state store", metadata: ["sqlite.journal_mode": "\(journalMode)"])
            let filename = writer.filename
            let writerSlot = ConnectionSlot(writer)
            self.writer = writerSlot

            var readers: [ConnectionSlot] = []
            if !inMemory {
                for _ in 0..<Self.readerCount {
                    let reader = try SQLiteConnection(path: path, busyTimeout: configuration.busyTimeout)
                    try reader.execute("PRAGMA synchronous = NORMAL; PRAGMA query_only = ON")
                    readers.append(ConnectionSlot(reader))
                }
            }
            self.readers = readers

            if let budget = configuration.inlineReadBudget {
                let settings = SQLiteInlineReads.Settings(budget: budget, retryInterval: configuration.inlineReadRetry)
                if inMemory {
                    inlineReads = SQLiteInlineReads(
                        settings: settings, source: .writer(writerSlot), files: [], threadPool: threadPool,
                        logger: logger, openReader: { throw StateStoreError.closed })
                } else if journalMode.lowercased() == "wal", let filename {
                    let select = queries.select
                    inlineReads = SQLiteInlineReads(
                        settings: settings, source: .loopReaders(SQLiteInlineReads.loopReaders(of: eventLoopGroup)),
                        files: [filename, filename + "-wal"], threadPool: threadPool, logger: logger,
                        openReader: {
                            // Never waits for a lock on the loop: a busy database sends the read to the pool.
                            let reader = try SQLiteConnection(path: path, busyTimeout: .zero)
                            try reader.execute("PRAGMA query_only = ON")
                            try reader.withStatement(select) { _ in }  // Reads the schema here, not on the loop.
                            return reader
                        })
                } else {
                    inlineReads = nil
                }
            } else {
                inlineReads = nil
            }
        } catch {
            throw Self.storeError(error)
        }

        if let interval = configuration.cleanupInterval {
            let eventLoop = eventLoopGroup.next()
            let task = eventLoop.scheduleRepeatedAsyncTask(
                initialDelay: TimeAmount(interval), delay: TimeAmount(interval)
            ) { [weak self] task in
                guard let self else {
                    task.cancel()
                    return eventLoop.makeSucceededVoidFuture()
                }
                return self.purgeExpired(on: eventLoop).map { deleted in
                    if deleted > 0 {
                        self.logger.debug("purged expired items", metadata: ["state.purged": "\(deleted)"])
                    }
                }.recover { error in
                    // A purge that raced with close has nothing left to do.
                    guard error as? StateStoreError != .closed else { return }
                    self.logger.warning("purging expired items failed", metadata: ["error": "\(error)"])
                }
            }
            cleanup.withLock { $0 = task }
        }
    }

    /// On the event loop when it can be (`SQLiteInlineReads`), else on the thread pool.
    package func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
        if let inline = inlineReads?.read(on: eventLoop, { connection in
            try self.read(key, now: Self.nowMilliseconds(), on: connection)
        }), let outcome = Self.inlineOutcome(inline) {
            return outcome
        }
        return .later(run(on: eventLoop) {
            defer { self.inlineReads?.openReader(for: eventLoop) }
            return try self.withReader { connection in
                try self.read(key, now: Self.nowMilliseconds(), on: connection)
            }
        })
    }

    /// Reads every key from one consistent snapshot: on the event loop when there are few and it can be
    /// (`SQLiteInlineReads`), else in one hop to the thread pool.
    package func bulkGet(
        _ keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[Result<StateEntry?, StateStoreError>]> {
        if let inlineReads, keys.count <= inlineReads.settings.bulkLimit,
            let inline = inlineReads.read(on: eventLoop, { connection -> [Result<StateEntry?, StateStoreError>] in
                let now = Self.nowMilliseconds()
                let inTransaction = keys.count > 1
                if inTransaction { try connection.run("BEGIN") }
                // A read-only transaction: ending it cannot lose anything.
                defer { if inTransaction { try? connection.run("COMMIT") } }
                // Any failure sends the whole read to the pool, which reports failures per key.
                return try keys.map { key in .success(try self.read(key, now: now, on: connection)) }
            }), let outcome = Self.inlineOutcome(inline)
        {
            return outcome
        }
        return .later(run(on: eventLoop) {
            defer { self.inlineReads?.openReader(for: eventLoop) }
            return try self.withReader { connection in
                let now = Self.nowMilliseconds()
                try connection.run("BEGIN")
                defer { try? connection.run("COMMIT") }  // A read-only transaction: ending it cannot lose anything.
                return keys.map { key in
                    Result { try self.read(key, now: now, on: connection) }.mapError(Self.storeError)
                }
            }
        }.recover { error in
            // As the protocol's default: a failure of the whole read is reported for every key.
            let failure = Self.storeError(error)
            return keys.map { _ in .failure(failure) }
        })
    }

    package func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.set(request)], on: eventLoop)
    }

    package func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.delete(request)], on: eventLoop)
    }

    package var usageByPartition: [String: Int] { usage.withLock { $0 } }

    /// Applies every operation or none. A transaction refused with `byteLimitExceeded` is tried again once the
    /// partition's expired items are deleted, if it had any.
    package func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        .later(run(on: eventLoop) {
            try self.withWriter { connection in
                while true {
                    do {
                        return try self.inTransaction(on: connection) {
                            ((), try self.apply(operations, now: Self.nowMilliseconds(), on: connection))
                        }
                    } catch StateStoreError.byteLimitExceeded(let partition, let usage, let limit) {
                        // Each retry deletes at least one row, so this ends.
                        guard try self.purgeExpired(partition: partition, on: connection) > 0 else {
                            throw StateStoreError.byteLimitExceeded(partition: partition, usage: usage, limit: limit)
                        }
                    }
                }
            }
        })
    }

    /// Deletes the items whose TTL has passed, takes their bytes off `usageByPartition`, and returns how many there
    /// were. Runs periodically when `cleanupInterval` is set; reads hide expired items either way.
    package func purgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        run(on: eventLoop) {
            try self.withWriter { connection in
                try self.inTransaction(on: connection) {
                    let now = Self.nowMilliseconds()
                    let freed = try connection.withStatement(self.queries.purgedUsage) { statement in
                        try statement.bind([.int64(now)])
                        var freed: [String: Int] = [:]
                        while try statement.step() { freed[statement.text(0), default: 0] -= Int(statement.int64(1)) }
                        return freed
                    }
                    try connection.run(self.queries.purge, .int64(now))
                    return (connection.changes, freed)
                }
            }
        }
    }

    /// Stops the cleanup, finalizes the statements and closes the connections. Closing twice succeeds.
    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else {
            return eventLoop.makeSucceededVoidFuture()
        }
        cleanup.withLock { task in
            task?.cancel()
            task = nil
        }
        // The writer last: the last connection to close checkpoints the WAL and removes it. That blocks, so it
        // belongs on the thread pool; if the pool has already stopped, it happens here rather than not at all.
        let slots = readers + [writer]
        let inlineReads = inlineReads
        return threadPool.runIfActive(eventLoop: eventLoop) {
            inlineReads?.close()
            Self.close(slots)
        }.flatMapError { _ in
            eventLoop.makeCompletedFuture {
                inlineReads?.close()
                Self.close(slots)
            }
        }.map {
            self.logger.debug("closed SQLite state store")
        }
    }

    // MARK: - Work done on the thread pool

    private func read(_ key: String, now: Int64, on connection: SQLiteConnection) throws -> StateEntry? {
        try connection.withStatement(queries.select) { statement in
            try statement.bind([.text(key), .int64(now)])
            guard try statement.step() else { return nil }
            let expiresAt =
                statement.isNull(2) ? nil : Date(timeIntervalSince1970: Double(statement.int64(2)) / 1000)
            return StateEntry(
                value: statement.blob(0), etag: StateETag.string(UInt64(clamping: statement.int64(1))),
                expiresAt: expiresAt)
        }
    }

    /// The row stored for a key, expired or not: its ETag when it is live, and its size in bytes.
    private func existing(
        _ key: String, now: Int64, on connection: SQLiteConnection
    ) throws -> (liveETag: String?, bytes: Int)? {
        try connection.withStatement(queries.selectExisting) { statement in
            try statement.bind([.text(key)])
            guard try statement.step() else { return nil }
            let live = statement.isNull(1) || statement.int64(1) > now
            return (
                live ? StateETag.string(UInt64(clamping: statement.int64(0))) : nil,
                key.utf8.count + Int(statement.int64(2))
            )
        }
    }

    /// Applies the operations inside the caller's transaction, advancing and persisting the ETag counter, and
    /// returns how many bytes each partition gains (or loses, when negative) once the transaction commits.
    private func apply(
        _ operations: [StateOperation], now: Int64, on connection: SQLiteConnection
    ) throws -> [String: Int] {
        var counter = try connection.withStatement(queries.readCounter) { statement in
            try statement.step() ? statement.int64(0) : 0
        }
        let initialCounter = counter
        var changes: [String: Int] = [:]
        for operation in operations {
            // The ETag rule sees expired rows as absent; the byte count compares with what is physically there.
            let existing = try existing(operation.key, now: now, on: connection)
            let partition = StatePartition.of(operation.key)
            switch operation {
            case .set(let request):
                try StateETag.check(
                    key: request.key, given: request.etag, concurrency: request.concurrency,
                    current: existing?.liveETag)
                let delta = request.key.utf8.count + request.value.count - (existing?.bytes ?? 0)
                if let limit = request.byteLimit, delta > 0 {
                    // Only the writer changes `usage`, and this runs on the writer: no one can overshoot.
                    let after = usage.withLock { $0[partition, default: 0] } + changes[partition, default: 0] + delta
                    if after > limit {
                        throw StateStoreError.byteLimitExceeded(partition: partition, usage: after, limit: limit)
                    }
                }
                counter += 1
                let expiresAt: SQLiteValue =
                    request.ttl.map { .int64(now.addingSaturating($0.saturatingMilliseconds)) } ?? .null
                try connection.run(queries.upsert, .text(request.key), .blob(request.value), .int64(counter), expiresAt)
                changes[partition, default: 0] += delta
            case .delete(let request):
                try StateETag.checkDelete(
                    key: request.key, given: request.etag, concurrency: request.concurrency,
                    current: existing?.liveETag)
                if let existing {
                    try connection.run(queries.delete, .text(request.key))
                    changes[partition, default: 0] -= existing.bytes
                }
            }
        }
        if counter != initialCounter {
            try connection.run(queries.writeCounter, .text(String(counter)))
        }
        return changes
    }

    /// Deletes the expired rows of one partition in a transaction of its own and returns how many there were.
    private func purgeExpired(partition: String, on connection: SQLiteConnection) throws -> Int {
        let prefix = partition + StatePartition.separator
        // The smallest string above every key that starts with `prefix`: `||` becomes `|}`.
        let end = partition + "|}"
        let now = Self.nowMilliseconds()
        return try inTransaction(on: connection) {
            let parameters: [SQLiteValue] = [.text(partition), .text(prefix), .text(end), .int64(now)]
            let (count, bytes) = try connection.withStatement(queries.purgedPartitionUsage) { statement in
                try statement.bind(parameters)
                return try statement.step() ? (Int(statement.int64(0)), Int(statement.int64(1))) : (0, 0)
            }
            guard count > 0 else { return (0, [:]) }
            try connection.withStatement(queries.purgePartition) { statement in
                try statement.bind(parameters)
                while try statement.step() {}
            }
            return (connection.changes, [partition: -bytes])
        }
    }

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction on the writer, and adds the byte changes it returns to
    /// `usage` once the transaction has committed: a transaction rolled back changes nothing.
    private func inTransaction<Value>(
        on connection: SQLiteConnection, _ body: () throws -> (Value, changes: [String: Int])
    ) throws -> Value {
        try connection.run("BEGIN IMMEDIATE")
        let result: (Value, changes: [String: Int])
        do {
            result = try body()
            try connection.run("COMMIT")
        } catch {
            try? connection.run("ROLLBACK")  // The original error is the one worth reporting.
            throw error
        }
        usage.withLock { usage in
            for (partition, delta) in result.changes { Self.add(delta, to: partition, in: &usage) }
        }
        return result.0
    }

    /// Adds `delta` bytes to a partition's count, leaving out partitions that hold nothing.
    private static func add(_ delta: Int, to partition: String, in usage: inout [String: Int]) {
        guard delta != 0 else { return }
        let total = usage[partition, default: 0] + delta
        usage[partition] = total > 0 ? total : nil
    }

    private static func close(_ slots: [ConnectionSlot]) {
        for slot in slots {
            slot.connection.withLock { connection in
                connection?.close()
                connection = nil
            }
        }
    }

    // MARK: - Plumbing

    /// Runs `body` on the thread pool, unless the store is closed, reporting every failure as a `StateStoreError`.
    private func run<Value: Sendable>(
        on eventLoop: any EventLoop, _ body: @escaping @Sendable () throws -> Value
    ) -> EventLoopFuture<Value> {
        guard !closed.load(ordering: .acquiring) else { return eventLoop.makeFailedFuture(StateStoreError.closed) }
        return threadPool.runIfActive(eventLoop: eventLoop, body).flatMapErrorThrowing { error in
            throw Self.storeError(error)
        }
    }

    private func withWriter<Value: Sendable>(_ body: (SQLiteConnection) throws -> Value) throws -> Value {
        try Self.with(writer, body)
    }

    /// Uses a free reader if there is one, else waits for the next in turn.
    private func withReader<Value: Sendable>(_ body: (SQLiteConnection) throws -> Value) throws -> Value {
        guard !readers.isEmpty else { return try withWriter(body) }
        let first = nextReader.wrappingAdd(1, ordering: .relaxed).oldValue
        for offset in 0..<readers.count {
            let slot = readers[(first &+ offset) % readers.count]
            let result = try slot.connection.withLockIfAvailable { connection in
                guard let connection else { throw StateStoreError.closed }
                return try body(connection)
            }
            if let result { return result }
        }
        return try Self.with(readers[first % readers.count], body)
    }

    private static func with<Value: Sendable>(
        _ slot: ConnectionSlot, _ body: (SQLiteConnection) throws -> Value
    ) throws -> Value {
        try slot.connection.withLock { connection in
            guard let connection else { throw StateStoreError.closed }
            return try body(connection)
        }
    }

    /// What an inline read answers: its value, or that the store is closed; nil for any other failure, which the
    /// thread pool's readers then meet (and report) themselves, waiting for a busy database as they do.
    private static func inlineOutcome<Value: Sendable>(_ result: Result<Value, any Error>) -> Eventual<Value>? {
        switch result {
        case .success(let value): .success(value)
        case .failure(let error as StateStoreError) where error == .closed: .failure(error)
        case .failure: nil
        }
    }

    private static func storeError(_ error: any Error) -> StateStoreError {
        switch error {
        case let error as StateStoreError: error
        case let error as SQLiteError: .backend(error.description)
        case is NIOThreadPoolError.ThreadPoolInactive: .backend("the SQLite thread pool is not running")
        default: .backend("\(error)")
        }
    }

    /// Checks a configuration without opening anything, so that a bad one is refused before any I/O.
    package static func validate(_ configuration: Configuration) throws(ConfigurationError) {
        guard !configuration.path.isEmpty else { throw .emptyPath }
        let name = configuration.tableName.utf8
        let isLetter = { (byte: UInt8) in (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") }
        let isDigit = { (byte: UInt8) in byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        let isUnderscore = { (byte: UInt8) in byte == UInt8(ascii: "_") }
        guard let first = name.first, isLetter(first) || isUnderscore(first), name.count <= 63,
            name.dropFirst().allSatisfy({ isLetter($0) || isDigit($0) || isUnderscore($0) })
        else { throw .invalidTableName(configuration.tableName) }
        if let interval = configuration.cleanupInterval, interval <= .zero {
            throw .invalidCleanupInterval(interval)
        }
        if let budget = configuration.inlineReadBudget, budget < .zero || configuration.inlineReadRetry <= .zero {
            throw .invalidInlineReads(budget: budget, retry: configuration.inlineReadRetry)
        }
    }

    private static func nowMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}

extension Int64 {
    fileprivate func addingSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other < 0 ? .min : .max) : sum
    }
}
