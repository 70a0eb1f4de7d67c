package import HangarComponents

/// Registers this target's component types: `pubsub.redis`.
package func register(into registry: inout ComponentRegistry) {
    registry.register(RedisPubSub.descriptor)
}
