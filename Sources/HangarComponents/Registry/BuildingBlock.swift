/// A Dapr API family that components serve: the part of a component type before its first dot (`state` in
/// `state.sqlite`). Pub/sub, lock and secrets add their cases with their components.
package enum BuildingBlock: String, Sendable, Hashable, CaseIterable {
    case state

    /// Metadata the runtime reads for every component of this block, whatever its type (state: Dapr's
    /// `keyPrefix`, and `actorStateStore`, accepted and unused until actors exist).
    package var metadata: [ComponentMetadataField] {
        switch self {
        case .state: [ComponentMetadataField("keyPrefix"), ComponentMetadataField("actorStateStore")]
        }
    }
}
