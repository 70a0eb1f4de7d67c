public import HangarComponents
import Logging
public import NIOCore
import NIOPosix
import Synchronization

/// Every component instance of the node, created once from the registry's descriptors and shared by the tenants
/// allowed to use them. Replaced live by `apply`: an unchanged component keeps its instance; a changed one is
/// re-created and swapped in, and the old instance is closed once the calls it is serving are done.
public final class ComponentHost: Sendable {
    /// A component instance's identity: its namespace (nil when shared) and name. Names are unique per namespace
    /// across building blocks, as in Dapr.
    private struct PoolKey: Hashable {
        let namespace: String?
        let name: String
    }

    private struct Pools: Sendable {
        var all: [PoolKey: any AnyComponentPool] = [:]
        var specs: [ComponentSpec] = []
    }

    private let pools: Mutex<Pools>
    /// The component types this build can create.
    public let registry: ComponentRegistry
    private let context: ComponentContext
    private let logger: Logger
    /// Delays between initialisation attempts of a DOWN component.
    static let firstRetryDelay: Duration = .seconds(1)
    static let maxRetryDelay: Duration = .seconds(30)
    /// How long a replaced component may keep serving calls in flight before it is closed anyway.
    public let retireTimeout: Duration

    /// Checks every component and creates its pool; a component whose spec is invalid fails start-up with its file
    /// and field. Components that execute inline are open at once; the others are `INIT` until `initialise()`.
    public init(
        components: [ComponentSpec], registry: ComponentRegistry, context: ComponentContext,
        retireTimeout: Duration = .seconds(30)
    ) throws(ConfigurationError) {
        self.registry = registry
        self.context = context
        self.logger = context.logger
        self.retireTimeout = retireTimeout
        self.pools = Mutex(Pools())
        let all = try build(components, reusing: [:])
        for pool in all.values where pool.opensInline {
            pool.attempted(
                pool.open(), threadPool: context.threadPool, eventLoop: context.eventLoopGroup.any(),
                nextDelay: Self.firstRetryDelay)
        }
        pools.withLock { $0 = Pools(all: all, specs: components) }
    }

    /// Opens every component not open yet, concurrently, and returns once each has made its first attempt. One
    /// that fails is DOWN, retried in the background, and does not stop the others.
    public func initialise() async {
        let loop = context.eventLoopGroup.any()
        // Components that execute inline were opened (and, failing, put on retry) when their pool was made.
        let attempts = all.filter { !$0.opensInline && $0.health.status == .initialising }.map {
            $0.initialise(threadPool: context.threadPool, eventLoop: loop)
        }
        try? await EventLoopFuture.andAllComplete(attempts, on: loop).get()
    }

    /// Checks a spec against the registry, naming its file and field when it is refused.
    public static func check(_ spec: ComponentSpec, in registry: ComponentRegistry) throws(ConfigurationError)
        -> ComponentDescriptor
    {
        do {
            return try registry.check(spec.definition)
        } catch {
            throw ConfigurationError(path: spec.source, field: error.field, message: error.message)
        }
    }

    /// Creates the pools for `components` (not opened), reusing those whose spec is unchanged. The one place that
    /// maps a building block to its scope: a new block adds its case here.
    private func build(
        _ components: [ComponentSpec], reusing existing: [PoolKey: any AnyComponentPool]
    ) throws(ConfigurationError) -> [PoolKey: any AnyComponentPool] {
        var pools: [PoolKey: any AnyComponentPool] = [:]
        for spec in components {
            let key = PoolKey(namespace: spec.namespace, name: spec.name)
            if let pool = existing[key], pool.spec.sameInstance(as: spec) {
                pools[key] = pool
                continue
            }
            let descriptor = try Self.check(spec, in: registry)
            switch descriptor.block {
            case .state:
                pools[key] = try ComponentPool<TenantStateHandle>(spec: spec, descriptor: descriptor, context: context)
            }
        }
        return pools
    }

    /// Switches to a new set of components. A spec that is invalid rejects the whole change (nothing changes; the
    /// error names its file and field). New and changed components are opened before the switch, so calls move to
    /// a working instance; one that fails to open goes in DOWN and is retried. Replaced and removed instances are
    /// retired.
    public func apply(_ components: [ComponentSpec]) throws(ConfigurationError) {
        let existing = pools.withLock { $0.all }
        let all = try build(components, reusing: existing)
        let created = all.values.filter { pool in !existing.values.contains { $0 === pool } }
        let loop = context.eventLoopGroup.any()
        for pool in created {
            // Blocking, as reconfiguration runs off the event loops; retries run in the background.
            pool.attempted(
                pool.open(), threadPool: context.threadPool, eventLoop: loop, nextDelay: Self.firstRetryDelay)
        }
        let retired = pools.withLock { pools -> [any AnyComponentPool] in
            let old = pools.all
            pools = Pools(all: all, specs: components)
            return old.compactMap { key, pool in all[key] === pool ? nil : pool }
        }
        for pool in retired {
            logger.info(
                created.contains { $0.spec.poolKey == pool.spec.poolKey }
                    ? "component changed: the new instance serves new calls; the old one closes when idle"
                    : "component removed: it closes when idle",
                metadata: [
                    "component.name": "\(pool.spec.name)", "component.namespace": "\(pool.spec.namespace ?? "*")",
                ])
            pool.retire(timeout: retireTimeout)
        }
    }

    static func metadata(_ spec: ComponentSpec) -> Logger.Metadata {
        [
            "component.name": "\(spec.name)", "component.type": "\(spec.type)",
            "component.namespace": "\(spec.namespace ?? "*")",
        ]
    }

    /// The tenant-scoped handle on the component `name` of `Scope`'s block as `caller` sees it: the one lookup
    /// every building block uses. Refused when the caller may use no component of the block (not configured),
    /// none by that name (not found: absent, another tenant's, out of scope or of another block), or it is not
    /// serving (INIT or DOWN).
    public func scoped<Scope: TenantScope>(
        _ scope: Scope.Type, named name: String, for caller: Caller, tenant: TenantAccount?
    ) throws(APIError) -> Scope {
        let app = caller.app
        let found = pools.withLock { pools -> (any AnyComponentPool)? in
            if let pool = pools.all[PoolKey(namespace: app.namespace, name: name)] {
                return pool.spec.isVisible(to: app) ? pool : nil
            }
            if let pool = pools.all[PoolKey(namespace: nil, name: name)], pool.spec.isVisible(to: app) {
                return pool
            }
            return nil
        }
        guard let pool = found as? ComponentPool<Scope> else {
            if !has(Scope.block, for: app) { throw Scope.notConfigured() }
            throw Scope.notFound(name)
        }
        guard let scoped = pool.scope(for: app, tenant: tenant) else { throw Scope.unavailable(pool.health) }
        return scoped
    }

    /// Whether the app may use any component of `block` at all.
    public func has(_ block: BuildingBlock, for app: AppID) -> Bool {
        pools.withLock { $0.all.values.contains { $0.block == block && $0.spec.isVisible(to: app) } }
    }

    /// Every component's health, shared ones first, then by namespace and name.
    public var health: [ComponentHealth] {
        all.map(\.health).sorted { ($0.namespace ?? "", $0.name) < ($1.namespace ?? "", $1.name) }
    }

    /// Whether every component has made its first initialisation attempt (none is `INIT`).
    public var initialised: Bool { !all.contains { $0.health.status == .initialising } }

    public var specs: [ComponentSpec] { pools.withLock { $0.specs } }

    /// Every live pool, of every building block.
    package var all: [any AnyComponentPool] { pools.withLock { Array($0.all.values) } }

    /// The components an app may use, with a namespaced component hiding a shared one of the same name.
    public func visibleComponents(to app: AppID) -> [ComponentSpec] {
        var byName: [String: ComponentSpec] = [:]
        for spec in specs where spec.namespace == nil || spec.namespace == app.namespace {
            if spec.namespace != nil || byName[spec.name] == nil { byName[spec.name] = spec }
        }
        return byName.values.filter { $0.isVisible(to: app) }.sorted { $0.name < $1.name }
    }

    /// The optional features of a component's open instance, as Dapr names them.
    public func features(of spec: ComponentSpec) -> [String] {
        pools.withLock { $0.all[PoolKey(namespace: spec.namespace, name: spec.name)] }?.capabilities ?? []
    }

    /// The health of the components an app may use.
    public func health(visibleTo app: AppID) -> [ComponentHealth] {
        let visible = Set(visibleComponents(to: app).map(\.poolKey))
        return pools.withLock { pools in
            pools.all.values.filter { visible.contains($0.spec.poolKey) }.map(\.health)
        }.sorted { $0.name < $1.name }
    }

    /// Closes every component.
    public func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let closes = all.map { $0.close(on: eventLoop) }
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }
}
