import Foundation
package import HangarComponents

extension SQLitePubSub {
    /// `pubsub.sqlite`: every metadata field optional. `connectionString` (default `<name>.db` in the data
    /// directory, as `state.sqlite`), `busyTimeout` (default 2s), `synchronous` (`normal`, the default, or `full`),
    /// and the limits of `PubSubLimits`: `ackTimeout`/`visibilityTimeout` (60s), `retentionPeriod` (24h, `0`
    /// keeps messages until every consumer acked them), `maxTopicBytes` and `maxRetainedBytes` (no limit),
    /// `cleanupInterval` (10s). Blocking, so its calls run on the thread pool.
    package static let descriptor = ComponentDescriptor(
        type: "pubsub.sqlite",
        metadata: ["connectionString", "busyTimeout", "synchronous"].map { ComponentMetadataField($0) }
            + PubSubLimits.metadataFields,
        executesInline: false,
        make: .pubsub { (definition, context) throws(ComponentDefinitionError) in
            let settings = try SQLitePubSub.configuration(definition, dataDirectory: context.dataDirectory)
            return {
                do {
                    return try SQLitePubSub(
                        configuration: settings, threadPool: context.threadPool,
                        eventLoopGroup: context.eventLoopGroup, logger: context.logger)
                } catch {
                    throw ComponentInitError("cannot open pubsub.sqlite: \(error)")
                }
            }
        })

    /// The configuration from a component's metadata; a bad value is refused naming its field.
    static func configuration(
        _ definition: ComponentDefinition, dataDirectory: String
    ) throws(ComponentDefinitionError) -> Configuration {
        let metadata = definition.metadata
        var configuration = Configuration(
            path: SQLiteStateStore.path(
                metadata["connectionString"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(definition.name).db",
                dataDirectory: dataDirectory),
            limits: try PubSubLimits(metadata: metadata, defaults: PubSubLimits()))
        if let text = metadata["busyTimeout"], !text.isEmpty {
            guard let value = GoDuration.parse(text), value >= .zero else {
                throw .metadata("busyTimeout", "'\(text)' is not a duration (e.g. 2s, 500ms)")
            }
            configuration.busyTimeout = value
        }
        switch metadata["synchronous"]?.lowercased() {
        case nil, "", "normal": configuration.synchronousFull = false
        case "full": configuration.synchronousFull = true
        case let other?: throw .metadata("synchronous", "must be 'normal' or 'full', not '\(other)'")
        }
        return configuration
    }
}
