package import HangarComponents

/// Registers this target's component types: `state.sqlite`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(SQLiteStateStore.descriptor)
}
