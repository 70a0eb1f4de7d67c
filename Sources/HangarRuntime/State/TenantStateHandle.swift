package import HangarComponents
package import NIOCore

/// A caller's view of a state store: keys go in as the app wrote them and are stored under its tenant's prefix.
/// The state block's `TenantScope`, and the single place where state keys are partitioned.
package struct TenantStateHandle: TenantScope {
    package let pool: ComponentPool<TenantStateHandle>
    /// The pool's store, open when the handle was made.
    package let store: any StateStore
    package let prefix: String
    package let app: AppID
    /// The caller's tenant account (its weight and `maxStateBytes`); nil only in tests without a registry.
    package let tenant: TenantAccount?

    package init(pool: ComponentPool<TenantStateHandle>, component: any StateStore, app: AppID, tenant: TenantAccount?) {
        self.pool = pool
        self.store = component
        self.prefix = pool.partitioning.prefix(for: app, component: pool.spec.name)
        self.app = app
        self.tenant = tenant
    }

    package var name: String { pool.spec.name }

    /// The physical key for an app's key, refusing keys that could break partitioning.
    package func physicalKey(_ key: String) throws(APIError) -> String {
        if key.isEmpty { throw RequestError.malformed("the state key is empty") }
        if Names.containsKeySeparator(key) {
            throw APIError(
                errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
                message: "input key/keyPrefix \(Names.quoted(key)) can't contain '||'", reason: "DAPR_STATE_ILLEGAL_KEY"
            )
        }
        return prefix + key
    }

    /// Runs one operation on the store, fairly queued against other tenants when the store blocks.
    func run<T: Sendable>(
        on eventLoop: any EventLoop, _ operation: @escaping @Sendable (any StateStore) -> Eventual<T>
    ) -> Eventual<T> {
        pool.run(store, namespace: app.namespace, tenant: tenant, on: eventLoop, operation)
    }

    // MARK: TenantScope

    package static var block: BuildingBlock { .state }

    package static func partitioning(of spec: ComponentSpec) throws(ConfigurationError) -> KeyPrefixPolicy {
        try KeyPrefixPolicy(spec.metadata["keyPrefix"], source: spec.source)
    }

    package static func opener(
        _ make: ComponentDescriptor.Make, _ definition: ComponentDefinition, _ context: ComponentContext
    ) throws(ComponentDefinitionError) -> ComponentDescriptor.Opener<any StateStore>? {
        switch make {
        case .state(let factory): try factory(definition, context)
        case .pubsub, .secretstores: nil
        }
    }

    package static func close(_ component: any StateStore, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        component.close(on: eventLoop)
    }

    package static func capabilities(of component: any StateStore) -> [String] { component.features.daprNames }

    package static func usageByPartition(of component: any StateStore) -> [String: Int] {
        component.usageByPartition
    }

    package static func notConfigured(_ name: String) -> APIError { StateAPIError.notConfigured() }
    package static func notFound(_ name: String) -> APIError { StateAPIError.storeNotFound(name) }
    package static func unavailable(_ health: ComponentHealth) -> APIError { StateAPIError.unavailable(health) }
}
