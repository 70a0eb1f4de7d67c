internal import VaporCSQLite

/// A synchronous SQLite connection with a cache of prepared statements.
///
/// Opened with `SQLITE_OPEN_NOMUTEX`: a connection must be used by one thread at a time, which its owner ensures
/// (the state store keeps every connection behind a `Mutex`). Not `Sendable` for that reason.
final class SQLiteConnection {
    private var handle: OpaquePointer?
    private var statements: [String: OpaquePointer] = [:]
    /// What the WAL hook records into (`recordWALFrames`), kept as long as the connection.
    private var walFrames: WALFrames?

    /// `sqlite3_initialize` is not safe to race against the first `sqlite3_open_v2`; a static runs it exactly once.
    private static let initialized: Int32 = sqlite_nio_sqlite3_initialize()

    /// Opens (creating when missing) the database at `path`, a file path, `:memory:` or a `file:` URI.
    init(path: String, busyTimeout: Duration) throws(SQLiteError) {
        guard Self.initialized == SQLITE_OK else {
            throw SQLiteError(code: Self.initialized, message: "sqlite3_initialize failed")
        }
        let flags =
            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI
            | SQLITE_OPEN_EXRESCODE
        var handle: OpaquePointer?
        let code = sqlite_nio_sqlite3_open_v2(path, &handle, flags, nil)
        guard code == SQLITE_OK, let handle else {
            let message =
                handle.map { String(cString: sqlite_nio_sqlite3_errmsg($0)) }
                ?? String(cString: sqlite_nio_sqlite3_errstr(code))
            sqlite_nio_sqlite3_close_v2(handle)
            throw SQLiteError(code: code, message: "cannot open \(path): \(message)")
        }
        self.handle = handle
        sqlite_nio_sqlite3_busy_timeout(handle, Int32(clamping: max(0, busyTimeout.saturatingMilliseconds)))
    }

    deinit { close() }

    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int {
        guard let handle else { return 0 }
        return Int(sqlite_nio_sqlite3_changes64(handle))
    }

    /// The path of the main database's file, nil for an in-memory or temporary database.
    var filename: String? {
        guard let handle, let name = sqlite_nio_sqlite3_db_filename(handle, "main") else { return nil }
        let path = String(cString: name)
        return path.isEmpty ? nil : path
    }

    /// Runs one or more statements that take no parameters and whose rows, if any, are ignored (DDL, pragmas).
    func execute(_ sql: String) throws(SQLiteError) {
        let handle = try openHandle()
        var message: UnsafeMutablePointer<CChar>?
        let code = sqlite_nio_sqlite3_exec(handle, sql, nil, nil, &message)
        guard code == SQLITE_OK else {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite_nio_sqlite3_errstr(code))
            sqlite_nio_sqlite3_free(message)
            throw SQLiteError(code: code, message: text)
        }
    }

    /// Runs `body` with the cached prepared statement for `sql`, preparing it on first use. The statement is reset
    /// and its bindings cleared afterwards, so that no read transaction stays open. Not reentrant for the same SQL.
    func withStatement<Result>(_ sql: String, _ body: (SQLiteStatement) throws -> Result) throws -> Result {
        let handle = try openHandle()
        let statement: OpaquePointer
        if let cached = statements[sql] {
            statement = cached
        } else {
            var prepared: OpaquePointer?
            let code = sqlite_nio_sqlite3_prepare_v3(
                handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil)
            guard code == SQLITE_OK, let prepared else {
                throw SQLiteError(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(handle)))
            }
            statements[sql] = prepared
            statement = prepared
        }
        defer {
            sqlite_nio_sqlite3_reset(statement)
            sqlite_nio_sqlite3_clear_bindings(statement)
        }
        return try body(SQLiteStatement(handle: statement, connection: handle))
    }

    /// Runs one statement with its parameters, ignoring any rows.
    func run(_ sql: String, _ parameters: SQLiteValue...) throws {
        try withStatement(sql) { statement in
            try statement.bind(parameters)
            while try statement.step() {}
        }
    }

    /// Replaces SQLite's auto-checkpoint with a hook that records in `frames` how many frames the WAL holds after
    /// each commit: the connection's owner checkpoints (`checkpoint()`), where and when it chooses.
    func recordWALFrames(in frames: WALFrames) throws(SQLiteError) {
        let handle = try openHandle()
        walFrames = frames
        _ = sqlite_nio_sqlite3_wal_hook(
            handle,
            { context, _, _, count in
                guard let context else { return SQLITE_OK }
                Unmanaged<WALFrames>.fromOpaque(context).takeUnretainedValue().record(Int(count))
                return SQLITE_OK
            }, Unmanaged.passUnretained(frames).toOpaque())
    }

    /// A PASSIVE checkpoint of the database: copies into the database file the WAL frames no reader needs, without
    /// waiting for any reader or writer. Answers the WAL's frames and how many of them are now copied.
    func checkpoint() throws(SQLiteError) -> (frames: Int, copied: Int) {
        let handle = try openHandle()
        var frames: Int32 = 0
        var copied: Int32 = 0
        let code = sqlite_nio_sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &frames, &copied)
        guard code == SQLITE_OK else {
            throw SQLiteError(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(handle)))
        }
        return (Int(frames), Int(copied))
    }

    /// Finalizes every cached statement and closes the connection. Safe to call more than once.
    func close() {
        for statement in statements.values { sqlite_nio_sqlite3_finalize(statement) }
        statements = [:]
        if let handle {
            sqlite_nio_sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    private func openHandle() throws(SQLiteError) -> OpaquePointer {
        guard let handle else { throw SQLiteError(code: SQLITE_MISUSE, message: "the connection is closed") }
        return handle
    }
}
