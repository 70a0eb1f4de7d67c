import Foundation
package import HangarComponents

extension SQLitePubSub {
    /// The limits of a `pubsub.sqlite` whose metadata sets none: those of `PubSubLimits`, and 4 GiB in all. A node
    /// must not let a subscriber that never acknowledges fill its disk: the 24 h retention bounds the log by time
    /// only, so the component also has a byte bound by default. 4 GiB leaves room for several tenants at their
    /// default `maxPubsubBytes` (1 GiB each, which keeps one tenant from taking it all); an operator with more
    /// tenants or more disk raises it (`maxRetainedBytes`), or turns it off with `0`.
    package static let defaultLimits = PubSubLimits(maxRetainedBytes: 4 << 30)

    /// Operations in flight at once unless `maxConcurrentOperations` says otherwise. Every one of them joins the
    /// writer's next batch (group commit: one commit for the batch), so this bounds the batches: at the pool's
    /// default of 8, 32 concurrent publishers made batches of 4 to 5 and a commit for every 4 or 5 publishes. The
    /// fair queue still orders what waits beyond it by tenant.
    package static let defaultConcurrency = 256

    /// `pubsub.sqlite`: every metadata field optional. `connectionString` (absent or empty: `<name>.db` in the data
    /// directory) and `busyTimeout` (default 2s; zero or negative: none) exactly as `state.sqlite` reads them
    /// (`SQLiteMetadata`), `synchronous` (`normal`, the default, or `full`), and the limits of `PubSubLimits`:
    /// `ackTimeout`/`visibilityTimeout` (60s), `retentionPeriod` (24h, `0` keeps messages until every consumer
    /// acked them), `maxTopicBytes` (no limit), `maxRetainedBytes` (4 GiB, `defaultLimits`; `0`: no limit),
    /// `cleanupInterval` (10s). Blocking, so its calls run on the thread pool; `defaultConcurrency` lets many
    /// operations be in flight at once (`maxConcurrentOperations` still sets it).
    package static let descriptor = ComponentDescriptor(
        type: "pubsub.sqlite",
        metadata: ["connectionString", "busyTimeout", "synchronous"].map { ComponentMetadataField($0) }
            + PubSubLimits.metadataFields,
        executesInline: false, defaultConcurrency: defaultConcurrency,
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
            path: SQLiteMetadata.path(definition, dataDirectory: dataDirectory),
            limits: try PubSubLimits(metadata: metadata, defaults: SQLitePubSub.defaultLimits))
        if let busy = try SQLiteMetadata.busyTimeout(metadata) { configuration.busyTimeout = busy }
        switch metadata["synchronous"]?.lowercased() {
        case nil, "", "normal": configuration.synchronousFull = false
        case "full": configuration.synchronousFull = true
        case let other?: throw .metadata("synchronous", "must be 'normal' or 'full', not '\(other)'")
        }
        return configuration
    }
}
