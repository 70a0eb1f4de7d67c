import Foundation
public import HangarComponents
import HangarSQLite
public import Logging
public import NIOCore
public import NIOPosix

/// Creates state store instances from `Component` specs. The only place that knows every state component type.
public struct StateStoreFactory: Sendable {
    public let dataDirectory: String
    public let threadPool: NIOThreadPool
    public let eventLoopGroup: any EventLoopGroup
    public let logger: Logger

    public init(dataDirectory: String, threadPool: NIOThreadPool, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.dataDirectory = dataDirectory
        self.threadPool = threadPool
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// The metadata names each type understands besides the common ones (`keyPrefix`).
    static let knownMetadata: [String: Set<String>] = [
        "state.in-memory": [],
        "state.sqlite": [
            "connectionString", "tableName", "busyTimeout", "cleanupInterval", "timeout", "timeoutInSeconds",
            "metadataTableName", "disableWAL",
        ],
    ]

    public func make(_ spec: ComponentSpec) throws(ConfigurationError) -> any StateStore {
        let known = (Self.knownMetadata[spec.type] ?? []).union(["keyPrefix", "actorStateStore"])
        for name in spec.metadata.keys.sorted() where !known.contains(name) {
            logger.warning(
                "unknown component metadata ignored",
                metadata: ["component.name": "\(spec.name)", "metadata.name": "\(name)"])
        }
        switch spec.type {
        case "state.in-memory":
            return InMemoryStateStore()
        case "state.sqlite":
            return try makeSQLite(spec)
        default:
            throw ConfigurationError(
                path: spec.source, field: "spec.type", message: "component type '\(spec.type)' is not supported")
        }
    }

    private func makeSQLite(_ spec: ComponentSpec) throws(ConfigurationError) -> any StateStore {
        func error(_ field: String, _ message: String) -> ConfigurationError {
            ConfigurationError(path: spec.source, field: "spec.metadata.\(field)", message: message)
        }
        func duration(_ name: String) throws(ConfigurationError) -> Duration? {
            guard let text = spec.metadata[name], !text.isEmpty else { return nil }
            guard let value = GoDuration.parse(text) else {
                throw error(name, "'\(text)' is not a duration (e.g. 2s, 500ms, 1h)")
            }
            return value
        }
        var configuration = SQLiteStateStore.Configuration(
            path: sqlitePath(spec.metadata["connectionString"] ?? "\(spec.name).db"))
        if let table = spec.metadata["tableName"], !table.isEmpty { configuration.tableName = table }
        if let busy = try duration("busyTimeout") { configuration.busyTimeout = busy }
        if let cleanup = try duration("cleanupInterval") {
            configuration.cleanupInterval = cleanup > .zero ? cleanup : nil
        }
        do {
            return try SQLiteStateStore(
                configuration: configuration, threadPool: threadPool, eventLoopGroup: eventLoopGroup, logger: logger)
        } catch {
            throw ConfigurationError(
                path: spec.source, field: "spec.metadata", message: "cannot open state.sqlite: \(error)")
        }
    }

    /// Dapr's `connectionString` is a file path, a `file:` URI or `:memory:`; relative paths live in the data dir.
    func sqlitePath(_ connectionString: String) -> String {
        var path = connectionString
        if path.hasPrefix("file:") {
            path = String(path.dropFirst(5))
            if let query = path.firstIndex(of: "?") { path = String(path[..<query]) }
        }
        if path == ":memory:" || path.hasPrefix("/") { return path }
        return (dataDirectory as NSString).appendingPathComponent(path)
    }
}
