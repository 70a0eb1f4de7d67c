import Foundation
package import HangarComponents
package import NIOCore

extension RedisPubSub {
    /// Dapr's `pubsub.redis` metadata beyond the connection's (`RedisMetadata.connectionFields`): `processingTimeout`
    /// (default 60s; `0` turns redelivery of other nodes' entries off) and `redeliverInterval` (default 15s),
    /// each a Go duration (`30s`) or an integer of milliseconds, as Dapr reads them; `queueDepth` (default 100);
    /// `maxLenApprox` and `streamTTL` (a Go duration; only one of the two, as Dapr warns). `concurrency` and
    /// `consumerID` are accepted and left to the runtime: it delivers with its own windows, and the consumer group
    /// is always the subscribing app's id. Hangar's own, as the embedded components read them: `maxRetainedBytes`
    /// (the most bytes the server's streams hold together; none by default) and `cleanupInterval` (how often
    /// acknowledged entries are trimmed; default 10s, `0` never).
    package static let pubsubFields = [
        "processingTimeout", "redeliverInterval", "queueDepth", "concurrency", "consumerID", "maxLenApprox",
        "streamTTL", "maxRetainedBytes", "cleanupInterval",
    ].map { ComponentMetadataField($0) }

    /// `pubsub.redis`. Opening connects and pings the server (a server that cannot be reached leaves the component
    /// DOWN, retried, as Dapr's `Init` fails); afterwards an outage fails calls fast and shows as DOWN
    /// (`backendProblem`) until the server answers again.
    package static let descriptor = ComponentDescriptor(
        type: "pubsub.redis", metadata: RedisMetadata.connectionFields + pubsubFields, executesInline: false,
        defaultConcurrency: 256,
        make: .pubsub { (definition, context) throws(ComponentDefinitionError) in
            let connection = try RedisMetadata(definition.metadata, clientName: "hangard:pubsub:\(definition.name)")
            let settings = try RedisPubSub.settings(definition.metadata, commandTimeout: connection.commandTimeout)
            return {
                let pubsub = RedisPubSub(
                    configuration: connection.configuration, options: connection.options, settings: settings,
                    eventLoopGroup: context.eventLoopGroup)
                do {
                    _ = try pubsub.client.send(["PING"], deadline: .now() + connection.commandTimeout).wait()
                } catch {
                    try? pubsub.close(on: context.eventLoopGroup.next()).wait()
                    throw ComponentInitError(
                        "pubsub.redis: cannot reach Redis at \(connection.configuration.address): \(error)")
                }
                return pubsub
            }
        })

    /// The pub/sub settings from a component's metadata; a bad value is refused naming its field.
    package static func settings(
        _ metadata: [String: String], commandTimeout: TimeAmount
    ) throws(ComponentDefinitionError) -> Settings {
        var settings = Settings()
        settings.commandTimeout = commandTimeout
        if let value = try duration(metadata, "processingTimeout") { settings.processingTimeout = value }
        if let value = try duration(metadata, "redeliverInterval") { settings.redeliverInterval = value }
        if let value = try integer(metadata, "queueDepth", in: 1...100_000) {
            settings.queueDepth = value
        }
        _ = try integer(metadata, "concurrency", in: 1...100_000)
        if let value = try integer(metadata, "maxLenApprox", in: 0...Int(Int64.max)), value > 0 {
            settings.maxLenApprox = value
        }
        if let text = metadata["streamTTL"]?.trimmingCharacters(in: .whitespaces), !text.isEmpty {
            guard let value = GoDuration.parse(text), value >= .zero else {
                throw .metadata("streamTTL", "'\(text)' is not a duration (e.g. 1h, 30m)")
            }
            if value > .zero { settings.streamTTL = value }
        }
        // Read as the embedded components read them (sizes with Ki/Mi/Gi, Go durations, 0 for none).
        let limits = try PubSubLimits(
            metadata: metadata.filter { ["maxRetainedBytes", "cleanupInterval"].contains($0.key) },
            defaults: PubSubLimits(maxRetainedBytes: nil, cleanupInterval: settings.cleanupInterval))
        settings.maxRetainedBytes = limits.maxRetainedBytes
        settings.cleanupInterval = limits.cleanupInterval
        if settings.maxLenApprox != nil, settings.streamTTL != nil {
            throw .metadata("streamTTL", "maxLenApprox and streamTTL cannot be used together: choose one way to trim")
        }
        return settings
    }

    /// A duration as Dapr's `pubsub.redis` reads `processingTimeout` and `redeliverInterval`: an integer is
    /// milliseconds, anything else a Go duration (`30s`); `0` turns the feature off. Nil when absent or empty.
    static func duration(_ metadata: [String: String], _ name: String) throws(ComponentDefinitionError) -> Duration? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        if let milliseconds = Int64(text) {
            guard milliseconds >= 0 else { throw .metadata(name, "must not be negative") }
            return .milliseconds(milliseconds)
        }
        guard let value = GoDuration.parse(text), value >= .zero else {
            throw .metadata(name, "'\(text)' is not a duration (e.g. 30s, 500ms, or an integer of milliseconds)")
        }
        return value
    }

    /// An integer in `range`; nil when absent or empty.
    static func integer(
        _ metadata: [String: String], _ name: String, in range: ClosedRange<Int>
    ) throws(ComponentDefinitionError) -> Int? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw .metadata(name, "must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return value
    }
}
