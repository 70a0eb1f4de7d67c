package import HangarComponents
package import NIOCore

/// How one building block plugs into the component pools: the type of its components, what it reads from a
/// component's spec to partition tenants, and the tenant-scoped handle `ComponentHost.scoped` hands its API.
///
/// The scope is the single place where a block partitions tenants: state prefixes keys with
/// `<namespace>||<appId>||` (`TenantStateHandle`), pub/sub topics and consumer groups with `<namespace>||`
/// (`TenantPubSubHandle`); secret stores are one tenant's each (`TenantSecretHandle`); lock would scope resource
/// ids, in its own scope type, with the same pool and lookup underneath.
package protocol TenantScope: Sendable {
    /// The component protocol as an existential (`any StateStore`).
    associatedtype Component: Sendable
    /// What the block reads once from a component's spec to partition tenants (state: its `keyPrefix`).
    associatedtype Partitioning: Sendable

    static var block: BuildingBlock { get }

    /// Reads the block's settings from a component's spec; an invalid one is refused with its file and field.
    static func partitioning(of spec: ComponentSpec) throws(ConfigurationError) -> Partitioning

    /// The opener a descriptor's factory gives for this block; nil when the descriptor is another block's.
    static func opener(
        _ make: ComponentDescriptor.Make, _ definition: ComponentDefinition, _ context: ComponentContext
    ) throws(ComponentDefinitionError) -> ComponentDescriptor.Opener<Component>?

    /// Closes an open component (its pool was retired or the node stops).
    static func close(_ component: Component, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// The component's optional features, as Dapr's metadata API names them.
    static func capabilities(of component: Component) -> [String]
    /// Bytes stored per tenant, for the metrics endpoint (empty when the block does not count them).
    static func usageByPartition(of component: Component) -> [String: Int]
    /// Whether the open component no longer matches its source (a secret store's file changed), so that a
    /// reconfiguration replaces it though its spec is unchanged. Blocking I/O allowed.
    static func sourceChanged(of component: Component) -> Bool

    /// The caller may use no component of this block at all (`name` is the one it asked for).
    static func notConfigured(_ name: String) -> APIError
    /// No component of this block by that name is visible to the caller.
    static func notFound(_ name: String) -> APIError
    /// The component exists but is not serving (INIT or DOWN).
    static func unavailable(_ health: ComponentHealth) -> APIError

    /// The caller's handle on an open component of `pool`.
    init(pool: ComponentPool<Self>, component: Component, app: AppID, tenant: TenantAccount?)
}

extension TenantScope {
    package static func sourceChanged(of component: Component) -> Bool { false }
}
