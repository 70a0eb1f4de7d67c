import Foundation
package import HangarComponents

extension SQLiteStateStore {
    /// `state.sqlite`: Dapr's SQLite state store metadata; blocking, so its calls run on the thread pool behind
    /// the pool's fair queue.
    package static let descriptor = ComponentDescriptor(
        type: "state.sqlite",
        metadata: [
            "connectionString", "tableName", "busyTimeout", "cleanupInterval", "timeout", "timeoutInSeconds",
            "metadataTableName", "disableWAL",
        ].map { ComponentMetadataField($0) },
        executesInline: false,
        make: .state { (definition, context) throws(ComponentDefinitionError) in
            let settings = try SQLiteStateStore.configuration(definition, dataDirectory: context.dataDirectory)
            return {
                do {
                    return try SQLiteStateStore(
                        configuration: settings, threadPool: context.threadPool,
                        eventLoopGroup: context.eventLoopGroup, logger: context.logger)
                } catch {
                    throw ComponentInitError("cannot open state.sqlite: \(error)")
                }
            }
        })

    /// The store's configuration from a component's metadata; `connectionString` and `busyTimeout` are read as
    /// `pubsub.sqlite` reads them (`SQLiteMetadata`).
    static func configuration(
        _ definition: ComponentDefinition, dataDirectory: String
    ) throws(ComponentDefinitionError) -> Configuration {
        func duration(_ name: String) throws(ComponentDefinitionError) -> Duration? {
            guard let text = definition.metadata[name], !text.isEmpty else { return nil }
            guard let value = GoDuration.parse(text) else {
                throw .metadata(name, "'\(text)' is not a duration (e.g. 2s, 500ms, 1h)")
            }
            return value
        }
        var configuration = Configuration(path: SQLiteMetadata.path(definition, dataDirectory: dataDirectory))
        if let table = definition.metadata["tableName"], !table.isEmpty { configuration.tableName = table }
        if let busy = try SQLiteMetadata.busyTimeout(definition.metadata) { configuration.busyTimeout = busy }
        if let cleanup = try duration("cleanupInterval") {
            configuration.cleanupInterval = cleanup > .zero ? cleanup : nil
        }
        do {
            try validate(configuration)
        } catch {
            throw ComponentDefinitionError(field: "spec.metadata", message: "\(error)")
        }
        return configuration
    }

    /// Dapr's `connectionString` is a file path, a `file:` URI or `:memory:`; relative paths live in the data dir.
    static func path(_ connectionString: String, dataDirectory: String) -> String {
        var path = connectionString
        if path.hasPrefix("file:") {
            path = String(path.dropFirst(5))
            if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        }
        if path == ":memory:" || path.hasPrefix("/") { return path }
        return (dataDirectory as NSString).appendingPathComponent(path)
    }
}
