import Foundation

/// What every SQLite-backed component does before its first statement: tell in-memory databases from files, create
/// a file's directory, and ask for WAL.
extension SQLiteConnection {
    /// Whether `path` names an in-memory database (`:memory:`, or a URI with `:memory:` or `mode=memory`).
    static func isInMemory(_ path: String) -> Bool {
        path == ":memory:" || path.hasPrefix("file::memory:") || (path.hasPrefix("file:") && path.contains("mode=memory"))
    }

    /// Creates the directory of a database file (nothing for in-memory databases and URIs); the reason when it
    /// cannot, for the component's own error.
    static func createDirectory(for path: String) -> String? {
        guard !isInMemory(path), !path.hasPrefix("file:") else { return nil }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return nil
        } catch {
            return "cannot create directory \(directory.path): \(error)"
        }
    }

    /// Asks for WAL mode and answers the journal mode SQLite settled on (`memory` for an in-memory database).
    func enableWAL() throws -> String {
        try withStatement("PRAGMA journal_mode = WAL") { statement in try statement.step() ? statement.text(0) : "" }
    }
}
