/// A failure reported by SQLite: its extended result code and message.
struct SQLiteError: Error, Sendable, Hashable, CustomStringConvertible {
    var code: Int32
    var message: String

    var description: String { "SQLite error \(code): \(message)" }
}
