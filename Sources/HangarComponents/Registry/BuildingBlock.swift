/// A Dapr API family that components serve: the part of a component type before its first dot (`state` in
/// `state.sqlite`). Lock adds its case with its components.
package enum BuildingBlock: String, Sendable, Hashable, CaseIterable {
    case state
    case pubsub
    case secretstores

    /// The block of a component type (`secretstores` for `secretstores.local.file`), nil when none is known.
    package init?(type: String) {
        self.init(rawValue: String(type.prefix { $0 != "." }))
    }

    /// Whether a component of this block declared without a namespace serves every tenant's apps. Not a secret
    /// store's: a node-wide one holds the node's secrets, which only node-wide components' `secretKeyRef`s read.
    package var sharedWithTenants: Bool { self != .secretstores }

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
        case .secretstores: []
        }
    }
}
