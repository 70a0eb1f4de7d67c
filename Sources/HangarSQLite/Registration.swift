package import HangarComponents

/// Registers this target's component types: `state.sqlite` and `pubsub.sqlite`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(SQLiteStateStore.descriptor)
    registry.register(SQLitePubSub.descriptor)
}
