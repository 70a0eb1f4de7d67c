package import HangarComponents

extension RedisStateStore {
    /// `state.redis`: Dapr's metadata (`RedisMetadata`), plus `ttlInSeconds` (the TTL of saves that give none),
    /// `keyLayout` (`StateKeyLayout`) and `queryIndexes` (refused: no Query API). Not inline: replies come from the
    /// server, behind the pool's fair queue, which admits 256 calls at once by default (8 connections with a full
    /// pipeline of 32; `maxConcurrentOperations` changes it).
    package static let descriptor = ComponentDescriptor(
        type: "state.redis",
        metadata: RedisMetadata.connectionFields + [
            ComponentMetadataField("ttlInSeconds"), ComponentMetadataField("queryIndexes"),
            ComponentMetadataField(StateKeyLayout.metadataName),
        ],
        executesInline: false,
        defaultConcurrency: 256,
        make: .state { (definition, context) throws(ComponentDefinitionError) in
            let settings = try RedisStateStore.settings(definition)
            return {
                do {
                    return try RedisStateStore(settings: settings, group: context.eventLoopGroup, logger: context.logger)
                } catch {
                    throw ComponentInitError(
                        "cannot open state.redis at \(settings.configuration.address): \(RedisStateStore.storeError(error, keys: []))")
                }
            }
        })

    /// The store's settings from a component's metadata.
    static func settings(_ definition: ComponentDefinition) throws(ComponentDefinitionError) -> Settings {
        let metadata = definition.metadata
        let connection = try RedisMetadata(metadata, clientName: "hangard:state:\(definition.name)")
        if let indexes = metadata["queryIndexes"], !indexes.trimmingCharacters(in: .whitespaces).isEmpty {
            throw .metadata("queryIndexes", "the state Query API is not supported")
        }
        var defaultTTL: Duration?
        if let text = metadata["ttlInSeconds"], !text.isEmpty {
            guard let seconds = Int(text) else {
                throw .metadata("ttlInSeconds", "must be a number of seconds, not '\(text)'")
            }
            defaultTTL = seconds > 0 ? .seconds(seconds) : nil
        }
        return Settings(
            configuration: connection.configuration, options: connection.options,
            commandTimeout: connection.commandTimeout, defaultTTL: defaultTTL,
            keyLayout: try StateKeyLayout(metadata: metadata))
    }
}
