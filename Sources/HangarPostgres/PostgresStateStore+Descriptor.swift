package import HangarComponents

extension PostgresStateStore {
    /// `state.postgresql`: Dapr's v2 metadata. Blocking to open (it connects and migrates), non-blocking after;
    /// `defaultConcurrency` lets more operations be in flight than connections, so the pool's queue (bounded,
    /// `PostgresBackend.Options.maxWaiting`) rather than the fair queue decides who waits for one.
    package static let descriptor = ComponentDescriptor(
        type: "state.postgresql",
        versions: ["v1", "v2"],
        metadata: [ComponentMetadataField("connectionString", required: true)]
            + [
                "tablePrefix", "metadataTableName", "timeout", "timeoutInSeconds", "cleanupInterval",
                "cleanupIntervalInSeconds", "maxConns", "connectionMaxIdleTime", "queryExecMode",
                StateKeyLayout.metadataName,
            ].map { ComponentMetadataField($0) },
        executesInline: false,
        defaultConcurrency: 64,
        make: .state { (definition, context) throws(ComponentDefinitionError) in
            let configuration = try PostgresStateStore.configuration(definition)
            return {
                do {
                    return try PostgresStateStore.open(
                        configuration: configuration, eventLoopGroup: context.eventLoopGroup, logger: context.logger)
                } catch {
                    // Errors here come from PostgresBackend/StateStoreError, which never show the password.
                    throw ComponentInitError(
                        "cannot open state.postgresql on \(configuration.connectionString.redacted): \(error)")
                }
            }
        })

    /// The store's configuration from a component's metadata; every refusal names its field, and none shows the
    /// connection string.
    package static func configuration(
        _ definition: ComponentDefinition
    ) throws(ComponentDefinitionError) -> Configuration {
        guard definition.version == "v2" else {
            throw ComponentDefinitionError(
                field: "spec.version",
                message: "state.postgresql \(definition.version) (Dapr's v1 layout: jsonb values, xmin ETags) is not "
                    + "supported; use version: v2 (Dapr's v2 layout)")
        }
        let metadata = definition.metadata
        func duration(_ names: [String]) throws(ComponentDefinitionError) -> Duration? {
            for name in names {
                guard let text = metadata[name], !text.isEmpty else { continue }
                guard let value = GoDuration.parse(text) else {
                    throw .metadata(name, "'\(text)' is not a duration (e.g. 20s, 500ms, 1h)")
                }
                return value
            }
            return nil
        }
        let connectionString: PostgresConnectionString
        do {
            connectionString = try PostgresConnectionString(parsing: metadata["connectionString"] ?? "")
        } catch {
            throw .metadata("connectionString", "\(error.description)")
        }
        var configuration = Configuration(connectionString: connectionString)
        configuration.keyLayout = try StateKeyLayout(metadata: metadata)
        if let prefix = metadata["tablePrefix"] { configuration.tablePrefix = prefix }
        guard Self.isTableName(configuration.stateTable) else {
            throw .metadata(
                "tablePrefix",
                "'\(configuration.tablePrefix)' does not make a valid table name (letters, digits "
                    + "and _, optionally schema-qualified as schema.prefix)")
        }
        if let table = metadata["metadataTableName"], !table.isEmpty {
            guard Self.isTableName(table) else {
                throw .metadata("metadataTableName", "'\(table)' is not a valid table name")
            }
            configuration.metadataTableName = table
        }
        if let timeout = try duration(["timeout", "timeoutInSeconds"]) {
            guard timeout >= .seconds(1) else { throw .metadata("timeout", "must be at least 1s") }
            configuration.timeout = timeout
            configuration.backend.timeout = timeout
        }
        if let cleanup = try duration(["cleanupInterval", "cleanupIntervalInSeconds"]) {
            configuration.cleanupInterval = cleanup > .zero ? cleanup : nil
        }
        if let text = metadata["maxConns"], !text.isEmpty {
            guard let value = Int(text), value >= 0, value <= 1000 else {
                throw .metadata("maxConns", "must be a number of connections from 0 to 1000, not '\(text)'")
            }
            // 0 means pgx's default there; here it is Hangar's default for the whole node.
            if value > 0 { configuration.backend.maxConnections = value }
        }
        if let idle = try duration(["connectionMaxIdleTime"]) {
            guard idle > .zero else { throw .metadata("connectionMaxIdleTime", "must be a positive duration") }
            configuration.backend.idleTimeout = idle
        }
        return configuration
    }

    /// `name` or `schema.name`, each an unquoted identifier: what may be spliced into SQL.
    static func isTableName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count) else { return false }
        return parts.allSatisfy { part in
            guard let first = part.unicodeScalars.first, part.count <= 63 else { return false }
            let isLetter = (first >= "a" && first <= "z") || (first >= "A" && first <= "Z") || first == "_"
            return isLetter
                && part.unicodeScalars.allSatisfy {
                    ($0 >= "a" && $0 <= "z") || ($0 >= "A" && $0 <= "Z") || ($0 >= "0" && $0 <= "9") || $0 == "_"
                }
        }
    }
}
