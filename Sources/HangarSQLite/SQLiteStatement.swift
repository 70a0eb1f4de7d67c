import Foundation
internal import VaporCSQLite

/// A prepared statement borrowed from a `SQLiteConnection` for the duration of `withStatement`.
struct SQLiteStatement {
    private let handle: OpaquePointer
    /// The connection's handle, for error messages.
    private let connection: OpaquePointer

    init(handle: OpaquePointer, connection: OpaquePointer) {
        self.handle = handle
        self.connection = connection
    }

    /// `SQLITE_TRANSIENT`: SQLite copies the bytes before the bind call returns. The C macro is not importable.
    private static var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }

    /// Binds `values` to parameters 1, 2, … in order.
    func bind(_ values: [SQLiteValue]) throws(SQLiteError) {
        for (offset, value) in values.enumerated() {
            try bind(value, at: Int32(offset + 1))
        }
    }

    /// Binds one parameter (1-based).
    func bind(_ value: SQLiteValue, at index: Int32) throws(SQLiteError) {
        let code: Int32
        switch value {
        case .text(let text):
            code = sqlite_nio_sqlite3_bind_text64(
                handle, index, text, UInt64(text.utf8.count), Self.transient, UInt8(SQLITE_UTF8))
        case .blob(let data) where data.isEmpty:
            // A nil pointer would bind NULL; an empty blob must stay a (zero-length) blob.
            code = sqlite_nio_sqlite3_bind_zeroblob(handle, index, 0)
        case .blob(let data):
            code = data.withUnsafeBytes { bytes in
                sqlite_nio_sqlite3_bind_blob64(handle, index, bytes.baseAddress, UInt64(bytes.count), Self.transient)
            }
        case .int64(let number):
            code = sqlite_nio_sqlite3_bind_int64(handle, index, number)
        case .null:
            code = sqlite_nio_sqlite3_bind_null(handle, index)
        }
        try check(code)
    }

    /// Advances to the next row: true when a row is available, false when the statement has finished.
    func step() throws(SQLiteError) -> Bool {
        let code = sqlite_nio_sqlite3_step(handle)
        switch code {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default: throw error(code)
        }
    }

    func isNull(_ column: Int32) -> Bool {
        sqlite_nio_sqlite3_column_type(handle, column) == SQLITE_NULL
    }

    func int64(_ column: Int32) -> Int64 {
        sqlite_nio_sqlite3_column_int64(handle, column)
    }

    func text(_ column: Int32) -> String {
        guard let bytes = sqlite_nio_sqlite3_column_text(handle, column) else { return "" }
        let count = Int(sqlite_nio_sqlite3_column_bytes(handle, column))
        return String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    }

    func blob(_ column: Int32) -> Data {
        // column_blob before column_bytes, as SQLite documents; a zero-length blob comes back as NULL.
        guard let bytes = sqlite_nio_sqlite3_column_blob(handle, column) else { return Data() }
        return Data(bytes: bytes, count: Int(sqlite_nio_sqlite3_column_bytes(handle, column)))
    }

    private func check(_ code: Int32) throws(SQLiteError) {
        guard code == SQLITE_OK else { throw error(code) }
    }

    private func error(_ code: Int32) -> SQLiteError {
        SQLiteError(code: code, message: String(cString: sqlite_nio_sqlite3_errmsg(connection)))
    }
}
