package import HangarComponents

/// Registers this target's component types: `state.redis`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(RedisStateStore.descriptor)
}
