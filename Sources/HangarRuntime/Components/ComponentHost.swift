package import HangarComponents
import Logging
package import NIOCore
import NIOPosix
import ServiceLifecycle
import HangarSync

/// Every component instance of the node, created once from the registry's descriptors and shared by the tenants
/// allowed to use them. Replaced live by `apply`: an unchanged component keeps its instance; a changed one is
/// re-created and swapped in, and the old instance is closed once the calls it is serving are done.
///
/// A `Service`: its `run()` owns the components' background work (reopening DOWN components with backoff, closing
/// retired ones that outlive the retire timeout) in one task group, and closes every component on shutdown. It is
/// listed before the node in hangard's `ServiceGroup`, which stops services in reverse order: the node drains
/// first, then the components close.
package final class ComponentHost: Sendable {
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

    private let pools: Locked<Pools>

    /// Background work for `run()`, queued by whoever finds it (an attempt that failed, a retirement).
    private enum Work: Sendable {
        case reopen(any AnyComponentPool, after: Duration)
        case expire(any AnyComponentPool, after: Duration)
    }

    private let work = AsyncStream.makeStream(of: Work.self)
    /// The component types this build can create.
    package let registry: ComponentRegistry
    private let context: ComponentContext
    private let logger: Logger
    /// Delays between initialisation attempts of a DOWN component.
    static let firstRetryDelay: Duration = .seconds(1)
    static let maxRetryDelay: Duration = .seconds(30)
    /// How long a replaced component may keep serving calls in flight before it is closed anyway.
    package let retireTimeout: Duration

    /// Checks every component and creates its pool; a component whose spec is invalid fails start-up with its file
    /// and field. Components that execute inline are open at once; the others are `INIT` until `initialise()`.
    package init(
        components: [ComponentSpec], registry: ComponentRegistry, context: ComponentContext,
        retireTimeout: Duration = .seconds(30)
    ) throws(ConfigurationError) {
        self.registry = registry
        self.context = context
        self.logger = context.logger
        self.retireTimeout = retireTimeout
        self.pools = Locked(Pools())
        let all = try build(components, reusing: [:])
        // Secret stores were opened by `build`, before the components whose `secretKeyRef`s they serve.
        for pool in all.values where pool.opensInline && pool.health.status == .initialising {
            attempted(pool, failure: pool.open(), nextDelay: Self.firstRetryDelay)
        }
        pools.withLock { $0 = Pools(all: all, specs: components) }
    }

    /// Opens every component not open yet, concurrently, and returns once each has made its first attempt. One
    /// that fails is DOWN and is retried by `run()`; it does not stop the others.
    package func initialise() async {
        // Components that execute inline were opened (and, failing, queued for retry) when their pool was made.
        await withDiscardingTaskGroup { group in
            for pool in all where !pool.opensInline && pool.health.status == .initialising {
                group.addTask {
                    self.attempted(pool, failure: await self.attempt(pool), nextDelay: Self.firstRetryDelay)
                }
            }
        }
    }

    /// One initialisation attempt, on the thread pool unless the component executes inline.
    private func attempt(_ pool: any AnyComponentPool) async -> (any Error)? {
        if pool.opensInline { return pool.open() }
        do {
            return try await context.threadPool.runIfActive { pool.open() }
        } catch {
            return error  // the thread pool is shutting down
        }
    }

    /// Logs an attempt's outcome and, after a failure, queues the next one for `run()`.
    private func attempted(_ pool: any AnyComponentPool, failure: (any Error)?, nextDelay: Duration) {
        var metadata = Self.metadata(pool.spec)
        metadata["component.attempts"] = "\(pool.health.attempts)"
        guard let failure else {
            logger.info("component initialised", metadata: metadata)
            return
        }
        guard !pool.isRetired else { return }
        metadata["error"] = "\(failure)"
        if case .failed = pool.secrets {
            // Retrying cannot help: the next reconfiguration or secret change resolves the references again.
            logger.error(
                "component failed to initialise; it is DOWN until its secretKeyRefs resolve", metadata: metadata)
            return
        }
        metadata["retry.in"] = "\(nextDelay)"
        logger.error("component failed to initialise; it is DOWN and will be retried", metadata: metadata)
        work.continuation.yield(.reopen(pool, after: nextDelay))
    }

    /// Checks a spec against the registry, naming its file and field when it is refused.
    package static func check(_ spec: ComponentSpec, in registry: ComponentRegistry) throws(ConfigurationError)
        -> ComponentDescriptor
    {
        let descriptor: ComponentDescriptor
        do {
            descriptor = try registry.check(spec.declaredDefinition)
        } catch {
            throw ConfigurationError(path: spec.source, field: error.field, message: error.message)
        }
        guard serves(descriptor.block) else {
            throw ConfigurationError(
                path: spec.source, field: "spec.type",
                message: "\(descriptor.block.rawValue) components ('\(spec.type)') are not served by this build yet")
        }
        try checkKeyLayout(spec, descriptor)
        if descriptor.block == .secretstores, let name = spec.secretRefs.keys.sorted().first {
            throw ConfigurationError(
                path: spec.source, field: "spec.metadata.\(name)",
                message: "a secret store's metadata cannot use secretKeyRef; give the value inline or with envRef")
        }
        // What the runtime itself reads is judged when the spec is, before any secret is resolved.
        let runtimeRead = Set(
            (descriptor.block.metadata + ComponentRegistry.poolMetadata).map(\.name) + [StateKeyLayout.metadataName])
        if let name = spec.secretRefs.keys.sorted().first(where: runtimeRead.contains) {
            throw ConfigurationError(
                path: spec.source, field: "spec.metadata.\(name)",
                message: "is read by the runtime, not the component, and cannot come from a secretKeyRef")
        }
        return descriptor
    }

    /// `keyLayout: dapr` (`StateKeyLayout`) drops the namespace from stored keys, so it is accepted only where the
    /// namespace is fixed by the component, and only by the types that read it (the shared-backend state stores).
    private static func checkKeyLayout(_ spec: ComponentSpec, _ descriptor: ComponentDescriptor)
        throws(ConfigurationError)
    {
        let name = StateKeyLayout.metadataName
        let layout: StateKeyLayout
        do {
            layout = try StateKeyLayout(metadata: spec.metadata)
        } catch {
            throw ConfigurationError(path: spec.source, field: error.field, message: error.message)
        }
        guard layout == .dapr else { return }
        guard descriptor.metadata.contains(where: { $0.name == name }) else {
            throw ConfigurationError(
                path: spec.source, field: "spec.metadata.\(name)",
                message: "\(spec.type) does not support keyLayout 'dapr' (it keeps every tenant's keys in one place)")
        }
        guard spec.namespace != nil else {
            throw ConfigurationError(
                path: spec.source, field: "spec.metadata.\(name)",
                message: "keyLayout 'dapr' needs metadata.namespace: without the namespace in the key, tenants "
                    + "sharing this component would share keys")
        }
    }

    /// Whether the runtime serves components of `block` (the registry may know more: a block's components may exist
    /// before its API does). Every block the registry knows is served today.
    package static func serves(_ block: BuildingBlock) -> Bool {
        switch block {
        case .state, .pubsub, .secretstores: true
        }
    }

    /// Creates the pools for `components`, reusing those whose spec is unchanged. The one place that maps a building
    /// block to its scope: a new block adds its case in `makePool`.
    ///
    /// Secret stores come first, and are opened here (they execute inline): the other components' `secretKeyRef`s
    /// are resolved against them (`resolveSecrets`) before their pools are made, which are not opened. A secret
    /// store whose source changed (`isStale`) is made anew, and a component whose references now resolve to other
    /// values (or fail, or succeed again) too: that is how a rotated secret reaches the components that use it.
    private func build(
        _ components: [ComponentSpec], reusing existing: [PoolKey: any AnyComponentPool]
    ) throws(ConfigurationError) -> [PoolKey: any AnyComponentPool] {
        var pools: [PoolKey: any AnyComponentPool] = [:]
        var opened: [any AnyComponentPool] = []
        do throws(ConfigurationError) {
            for spec in components where BuildingBlock(type: spec.type) == .secretstores {
                let key = PoolKey(namespace: spec.namespace, name: spec.name)
                if let pool = existing[key], pool.spec.sameInstance(as: spec), !pool.isStale {
                    pools[key] = pool
                    continue
                }
                let pool = try makePool(spec, secrets: .none)
                attempted(pool, failure: pool.open(), nextDelay: Self.firstRetryDelay)
                opened.append(pool)
                pools[key] = pool
            }
            for spec in components where BuildingBlock(type: spec.type) != .secretstores {
                let key = PoolKey(namespace: spec.namespace, name: spec.name)
                let secrets = resolveSecrets(of: spec, in: pools)
                if let pool = existing[key], pool.spec.sameInstance(as: spec), pool.secrets == secrets {
                    pools[key] = pool
                    continue
                }
                pools[key] = try makePool(spec, secrets: secrets)
            }
        } catch {
            // The change is refused: the secret stores opened for it are never served.
            for pool in opened { _ = pool.retire() }
            throw error
        }
        return pools
    }

    private func makePool(_ spec: ComponentSpec, secrets: ResolvedSecrets) throws(ConfigurationError)
        -> any AnyComponentPool
    {
        let descriptor = try Self.check(spec, in: registry)
        func pool<Scope: TenantScope>(_: Scope.Type) throws(ConfigurationError) -> any AnyComponentPool {
            try ComponentPool<Scope>(spec: spec, descriptor: descriptor, context: context, secrets: secrets)
        }
        return switch descriptor.block {
        case .state: try pool(TenantStateHandle.self)
        case .pubsub: try pool(TenantPubSubHandle.self)
        case .secretstores: try pool(TenantSecretHandle.self)
        }
    }

    /// Reads the values of `spec`'s `secretKeyRef`s from its secret store (`auth.secretStore`, else
    /// `ComponentSpec.defaultSecretStore`) among `stores`: a namespaced component's from its own namespace, a
    /// node-wide one's from the node-wide stores, never another's. What does not resolve is named (the metadata
    /// field, the store, the secret and the key), never a value.
    private func resolveSecrets(
        of spec: ComponentSpec, in stores: [PoolKey: any AnyComponentPool]
    ) -> ResolvedSecrets {
        guard !spec.secretRefs.isEmpty else { return .none }
        let storeName = spec.secretStore ?? ComponentSpec.defaultSecretStore
        let place = spec.namespace.map { "in namespace '\($0)'" } ?? "node-wide"
        let key = PoolKey(namespace: spec.namespace, name: storeName)
        guard let pool = stores[key] as? ComponentPool<TenantSecretHandle> else {
            return .failed(
                "secret store '\(storeName)' (auth.secretStore) is not declared \(place); a component's "
                    + "secretKeyRefs read only from secret stores declared where it is (its namespace, or node-wide)")
        }
        guard let store = pool.component else {
            let health = pool.health
            return .failed("secret store '\(storeName)' \(place) is \(health.status.rawValue): \(health.error ?? "")")
        }
        var values: [String: String] = [:]
        for (field, reference) in spec.secretRefs.sorted(by: { $0.key < $1.key }) {
            let named =
                "spec.metadata.\(field): secretKeyRef {name: \(reference.name), key: \(reference.key)} of secret store "
                + "'\(storeName)' \(place)"
            let secret: [String: String]
            do {
                secret = try store.secret(reference.name, metadata: ["namespace": spec.namespace ?? ""])
            } catch {
                return .failed("\(named): \(error)")
            }
            guard let value = secret[reference.key] else {
                return .failed("\(named): secret \(reference.name) has no key \(reference.key)")
            }
            guard !value.isEmpty else { return .failed("\(named): the value is empty") }
            values[field] = value
        }
        return .values(values)
    }

    /// Switches to a new set of components. A spec that is invalid rejects the whole change (nothing changes; the
    /// error names its file and field). New and changed components are opened before the switch, so calls move to
    /// a working instance; one that fails to open goes in DOWN and is retried. Replaced and removed instances are
    /// retired.
    package func apply(_ components: [ComponentSpec]) throws(ConfigurationError) {
        let existing = pools.withLock { $0.all }
        let all = try build(components, reusing: existing)
        let created = all.values.filter { pool in !existing.values.contains { $0 === pool } }
        for pool in created where pool.health.status == .initialising {
            // Blocking, as reconfiguration runs off the event loops; retries run in the background.
            attempted(pool, failure: pool.open(), nextDelay: Self.firstRetryDelay)
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
            if pool.retire() { work.continuation.yield(.expire(pool, after: retireTimeout)) }
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
    package func scoped<Scope: TenantScope>(
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
            if !has(Scope.block, for: app) { throw Scope.notConfigured(name) }
            throw Scope.notFound(name)
        }
        guard let scoped = pool.scope(for: app, tenant: tenant) else { throw Scope.unavailable(pool.health) }
        return scoped
    }

    /// Whether the app may use any component of `block` at all.
    package func has(_ block: BuildingBlock, for app: AppID) -> Bool {
        pools.withLock { $0.all.values.contains { $0.block == block && $0.spec.isVisible(to: app) } }
    }

    /// Every component's health, shared ones first, then by namespace and name.
    package var health: [ComponentHealth] {
        all.map(\.health).sorted { ($0.namespace ?? "", $0.name) < ($1.namespace ?? "", $1.name) }
    }

    /// Whether every component has made its first initialisation attempt (none is `INIT`).
    package var initialised: Bool { !all.contains { $0.health.status == .initialising } }

    package var specs: [ComponentSpec] { pools.withLock { $0.specs } }

    /// Every live pool, of every building block.
    package var all: [any AnyComponentPool] { pools.withLock { Array($0.all.values) } }

    /// The components an app may use, with a namespaced component hiding a shared one of the same name.
    package func visibleComponents(to app: AppID) -> [ComponentSpec] {
        var byName: [String: ComponentSpec] = [:]
        for spec in specs where spec.namespace == nil || spec.namespace == app.namespace {
            if spec.namespace != nil || byName[spec.name] == nil { byName[spec.name] = spec }
        }
        return byName.values.filter { $0.isVisible(to: app) }.sorted { $0.name < $1.name }
    }

    /// The files and directories the components read that the node watches (secret stores' sources), so that a
    /// change of them leads to a reconfiguration (`apply` with the same specs), which replaces what changed.
    package var watchedPaths: [String] {
        specs.flatMap { spec in registry.descriptor(for: spec.type)?.watchedPaths?(spec.metadata) ?? [] }
    }

    /// The optional features of a component's open instance, as Dapr names them.
    package func features(of spec: ComponentSpec) -> [String] {
        pools.withLock { $0.all[PoolKey(namespace: spec.namespace, name: spec.name)] }?.capabilities ?? []
    }

    /// The health of the components an app may use.
    package func health(visibleTo app: AppID) -> [ComponentHealth] {
        let visible = Set(visibleComponents(to: app).map(\.poolKey))
        return pools.withLock { pools in
            pools.all.values.filter { visible.contains($0.spec.poolKey) }.map(\.health)
        }.sorted { $0.name < $1.name }
    }

    /// Closes every component.
    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let closes = all.map { $0.close(on: eventLoop) }
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }
}

extension ComponentHost: Service {
    /// Runs the queued background work, each item a child task, until graceful shutdown or cancellation; then
    /// cancels what is left (a retired component waiting for its timeout is closed at once) and closes every
    /// component.
    package func run() async throws {
        await withDiscardingTaskGroup { group in
            for await item in work.stream.cancelOnGracefulShutdown() {
                switch item {
                case .reopen(let pool, let delay):
                    group.addTask { await self.reopen(pool, after: delay) }
                case .expire(let pool, let delay):
                    group.addTask {
                        try? await Task.sleep(for: delay)
                        pool.expire()
                    }
                }
            }
            group.cancelAll()
        }
        try? await close(on: context.eventLoopGroup.any()).get()
    }

    /// The next attempt for a DOWN component, after `delay`; a failure queues the one after, the delay doubled up to
    /// `maxRetryDelay`.
    private func reopen(_ pool: any AnyComponentPool, after delay: Duration) async {
        do {
            try await Task.sleep(for: delay)
        } catch {
            return
        }
        guard !pool.isRetired else { return }
        attempted(pool, failure: await attempt(pool), nextDelay: min(delay * 2, Self.maxRetryDelay))
    }
}
