package import HangarComponents

/// Registers this target's component types: `state.postgresql`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(PostgresStateStore.descriptor)
}
