extension InMemoryPubSub {
    /// `pubsub.in-memory` (Dapr's name): the limits of `PubSubLimits` (`maxRetainedBytes` defaults to 64 MiB);
    /// never blocks.
    package static let descriptor = ComponentDescriptor(
        type: "pubsub.in-memory", metadata: PubSubLimits.metadataFields, executesInline: true,
        make: .pubsub { (definition, context) throws(ComponentDefinitionError) in
            let limits = try PubSubLimits(metadata: definition.metadata, defaults: InMemoryPubSub.defaultLimits)
            return { InMemoryPubSub(limits: limits, eventLoopGroup: context.eventLoopGroup) }
        })
}
