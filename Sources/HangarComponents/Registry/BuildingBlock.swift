/// A Dapr API family that components serve: the part of a component type before its first dot (`state` in
/// `state.sqlite`). Lock and secrets add their cases with their components.
package enum BuildingBlock: String, Sendable, Hashable, CaseIterable {
    case state
    case pubsub

    /// Metadata the runtime reads for every component of this block, whatever its type (state: Dapr's
    /// `keyPrefix`, and `actorStateStore`, accepted and unused until actors exist; pub/sub: Dapr's consumer group
    /// and topic scopes).
    package var metadata: [ComponentMetadataField] {
        switch self {
        case .state: [ComponentMetadataField("keyPrefix"), ComponentMetadataField("actorStateStore")]
        case .pubsub:
            ["consumerID", "allowedTopics", "publishingScopes", "subscriptionScopes", "protectedTopics"].map {
                ComponentMetadataField($0)
            }
        }
    }
}
