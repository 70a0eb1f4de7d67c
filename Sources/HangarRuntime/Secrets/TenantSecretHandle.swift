package import HangarComponents
package import NIOCore

/// A caller's view of a secret store: the secrets block's `TenantScope`. Secret stores are not partitioned inside:
/// a store declared in a namespace is that tenant's alone, and one declared node-wide serves no app at all
/// (`BuildingBlock.sharedWithTenants`; it feeds node-wide components' `secretKeyRef`s), so the lookup
/// (`ComponentHost.scoped`) is the whole of the isolation.
package struct TenantSecretHandle: TenantScope {
    package let pool: ComponentPool<TenantSecretHandle>
    /// The pool's store, open when the handle was made.
    package let store: any SecretStore
    package let app: AppID

    package init(
        pool: ComponentPool<TenantSecretHandle>, component: any SecretStore, app: AppID, tenant: TenantAccount?
    ) {
        self.pool = pool
        self.store = component
        self.app = app
    }

    package var name: String { pool.spec.name }

    // MARK: TenantScope

    package static var block: BuildingBlock { .secretstores }

    package static func partitioning(of spec: ComponentSpec) throws(ConfigurationError) {}

    package static func opener(
        _ make: ComponentDescriptor.Make, _ definition: ComponentDefinition, _ context: ComponentContext
    ) throws(ComponentDefinitionError) -> ComponentDescriptor.Opener<any SecretStore>? {
        switch make {
        case .secretstores(let factory): try factory(definition, context)
        case .state, .pubsub: nil
        }
    }

    package static func close(_ component: any SecretStore, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeSucceededVoidFuture()
    }

    package static func capabilities(of component: any SecretStore) -> [String] { component.features.daprNames }

    package static func usageByPartition(of component: any SecretStore) -> [String: Int] { [:] }

    package static func sourceChanged(of component: any SecretStore) -> Bool { component.sourceChanged() }

    package static func notConfigured(_ name: String) -> APIError { SecretsAPIError.notConfigured() }
    package static func notFound(_ name: String) -> APIError { SecretsAPIError.storeNotFound(name) }
    package static func unavailable(_ health: ComponentHealth) -> APIError { SecretsAPIError.unavailable(health) }
}
