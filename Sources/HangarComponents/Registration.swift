/// Registers this target's component types: `state.in-memory` and `pubsub.in-memory`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(InMemoryStateStore.descriptor)
    registry.register(InMemoryPubSub.descriptor)
}
