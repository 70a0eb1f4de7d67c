package import HangarComponents

/// Registers this target's component types: `state.redis` and `pubsub.redis`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(RedisStateStore.descriptor)
    registry.register(RedisPubSub.descriptor)
}
