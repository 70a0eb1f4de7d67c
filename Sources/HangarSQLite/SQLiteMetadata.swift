import Foundation
import HangarComponents

/// The metadata both SQLite components (`state.sqlite`, `pubsub.sqlite`) share, read by one function each so that
/// they can never disagree, with the meaning Dapr's components-contrib gives it for every SQLite component
/// (`common/authentication/sqlite`).
enum SQLiteMetadata {
    /// `connectionString`: a file path (relative paths live in the data directory), a `file:` URI or `:memory:`.
    /// Absent, empty or blank: `<name>.db` in the data directory. Dapr refuses a missing connection string and
    /// cannot tell it from an empty one; Hangar gives every SQLite component a default file instead, so an empty
    /// value is missing and gets the default too (never the data directory itself, which SQLite cannot open).
    static func path(_ definition: ComponentDefinition, dataDirectory: String) -> String {
        let given = definition.metadata["connectionString"]?.trimmingCharacters(in: .whitespaces) ?? ""
        return SQLiteStateStore.path(given.isEmpty ? "\(definition.name).db" : given, dataDirectory: dataDirectory)
    }

    /// `busyTimeout`: how long a connection waits for a lock another process holds. A Go duration (`500ms`, `2s`,
    /// with an optional sign) or whole seconds, truncated to milliseconds. Zero or negative means no busy timeout
    /// (a locked database fails at once), as Dapr's "values <= 0 do not set any timeout". Nil when absent or empty
    /// (the component's default, 2 s); anything else is refused naming the field.
    static func busyTimeout(_ metadata: [String: String]) throws(ComponentDefinitionError) -> Duration? {
        guard let text = metadata["busyTimeout"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else {
            return nil
        }
        let negative = text.hasPrefix("-")
        let magnitude = text.hasPrefix("-") || text.hasPrefix("+") ? String(text.dropFirst()) : text
        guard !magnitude.hasPrefix("-"), !magnitude.hasPrefix("+"), let value = GoDuration.parse(magnitude) else {
            throw .metadata("busyTimeout", "'\(text)' is not a duration (e.g. 2s, 500ms)")
        }
        return negative || value < .zero ? .zero : .milliseconds(value.saturatingMilliseconds)
    }
}
