/// Registers this target's component types: `state.in-memory`, `pubsub.in-memory` and the local secret stores
/// (`secretstores.local.file`, `secretstores.local.env`, `secretstores.local.directory`).
package func register(into registry: inout ComponentRegistry) {
    registry.register(InMemoryStateStore.descriptor)
    registry.register(InMemoryPubSub.descriptor)
    registry.register(LocalFileSecretStore.descriptor)
    registry.register(EnvSecretStore.descriptor)
    registry.register(DirectorySecretStore.descriptor)
}
