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

    /// Checks a component's spec and returns how to open it. Everything that can be judged from the spec alone
    /// (type, metadata values) is a `ConfigurationError` here; what needs I/O (opening a file, later connecting to
    /// a server) happens in the recipe's `open`, whose failure marks the component DOWN instead.
    public func recipe(_ spec: ComponentSpec) throws(ConfigurationError) -> StateStoreRecipe {
        let known = (Self.knownMetadata[spec.type] ?? []).union(["keyPrefix", "actorStateStore", "maxConcurrentOperations"])
        for name in spec.metadata.keys.sorted() where !known.contains(name) {
            logger.warning(
                "unknown component metadata ignored",
                metadata: ["component.name": "\(spec.name)", "metadata.name": "\(name)"])
        }
        switch spec.type {
        case "state.in-memory":
            return StateStoreRecipe(executesInline: true) { InMemoryStateStore() }
        case "state.sqlite":
            return try sqliteRecipe(spec)
        default:
            throw ConfigurationError(
                path: spec.source, field: "spec.type", message: "component type '\(spec.type)' is not supported")
        }
    }

    private func sqliteRecipe(_ spec: ComponentSpec) throws(ConfigurationError) -> StateStoreRecipe {
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
            try SQLiteStateStore.validate(configuration)
        } catch {
            throw ConfigurationError(path: spec.source, field: "spec.metadata", message: "\(error)")
        }
        let threadPool = self.threadPool
        let eventLoopGroup = self.eventLoopGroup
        let logger = self.logger
        return StateStoreRecipe(executesInline: false) { [configuration] in
            do {
                return try SQLiteStateStore(
                    configuration: configuration, threadPool: threadPool, eventLoopGroup: eventLoopGroup,
                    logger: logger)
            } catch {
                throw ComponentInitError("cannot open state.sqlite: \(error)")
            }
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

/// How to create one state store: whether its operations run inline (it never blocks, so it is opened at once
/// and needs no fair queue), and the function that opens it (blocking I/O for stores that do not run inline).
public struct StateStoreRecipe: Sendable {
    public let executesInline: Bool
    public let open: @Sendable () throws -> any StateStore

    public init(executesInline: Bool, open: @escaping @Sendable () throws -> any StateStore) {
        self.executesInline = executesInline
        self.open = open
    }
}

/// Why a component could not be initialised (shown in its health and to callers).
public struct ComponentInitError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
