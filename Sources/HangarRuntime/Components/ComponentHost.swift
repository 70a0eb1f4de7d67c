public import HangarComponents
public import Logging
public import NIOCore
import Synchronization

/// Where Dapr's `keyPrefix` puts keys *within* a namespace. The namespace always comes first, so no setting can
/// reach across tenants.
public enum KeyPrefixPolicy: Sendable, Hashable {
    case appId
    case componentName
    case namespacedAppId
    case none
    case literal(String)

    init(_ value: String?, source: String) throws(ConfigurationError) {
        switch value?.lowercased() {
        case nil, "", "appid": self = .appId
        case "name": self = .componentName
        case "namespace": self = .namespacedAppId
        case "none": self = .none
        default:
            let literal = value!
            guard !literal.contains(Names.keySeparator) else {
                throw ConfigurationError(
                    path: source, field: "spec.metadata.keyPrefix", message: "may not contain '||'")
            }
            self = .literal(literal)
        }
    }

    /// The physical key prefix for a caller: `<namespace>||[<part>||]`.
    func prefix(for app: AppID, component: String) -> String {
        switch self {
        case .appId: "\(app.namespace)||\(app.appId)||"
        case .componentName: "\(app.namespace)||\(component)||"
        case .namespacedAppId: "\(app.namespace)||\(app.namespace).\(app.appId)||"
        case .none: "\(app.namespace)||"
        case .literal(let literal): "\(app.namespace)||\(literal)||"
        }
    }
}

/// One live state store shared by every tenant allowed to use it (a component pool). Every operation goes through
/// `run`, which counts it (so a replaced pool is closed only once its calls in flight are done) and, for a store
/// whose operations block (SQLite's thread pool), queues it fairly between tenants.
public final class StatePool: Sendable {
    public let spec: ComponentSpec
    public let store: any StateStore
    public let keyPrefix: KeyPrefixPolicy
    let fairQueue: FairQueue?
    private let inFlight = Atomic<Int>(0)
    private let retired = Atomic<Bool>(false)

    /// Operations a blocking store runs at once, unless its metadata sets `maxConcurrentOperations`.
    static let defaultCapacity = 8

    init(spec: ComponentSpec, store: any StateStore) throws(ConfigurationError) {
        self.spec = spec
        self.store = store
        self.keyPrefix = try KeyPrefixPolicy(spec.metadata["keyPrefix"], source: spec.source)
        if store.executesInline {
            fairQueue = nil
        } else {
            var capacity = Self.defaultCapacity
            if let text = spec.metadata["maxConcurrentOperations"] {
                guard let value = Int(text), (1...1024).contains(value) else {
                    throw ConfigurationError(
                        path: spec.source, field: "spec.metadata.maxConcurrentOperations",
                        message: "must be an integer from 1 to 1024, not '\(text)'")
                }
                capacity = value
            }
            fairQueue = FairQueue(capacity: capacity)
        }
    }

    /// The tenant-scoped handle for one caller: the single place where state keys are partitioned.
    public func handle(for app: AppID, tenant: TenantAccount?) -> TenantStateHandle {
        TenantStateHandle(
            pool: self, prefix: keyPrefix.prefix(for: app, component: spec.name), app: app, tenant: tenant)
    }

    /// Runs one store operation for `tenant`: at once for a non-blocking store, else through the fair queue.
    func run<T: Sendable>(
        _ tenant: TenantAccount?, namespace: String, on eventLoop: any EventLoop,
        _ operation: @escaping @Sendable (any StateStore) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        inFlight.add(1, ordering: .relaxed)
        guard let fairQueue else {
            let future = operation(store)
            future.whenComplete { _ in self.inFlight.subtract(1, ordering: .releasing) }
            return future
        }
        if fairQueue.tryAcquire(tenant: namespace) {
            let future = operation(store)
            future.whenComplete { _ in
                fairQueue.finished(tenant: namespace)
                self.inFlight.subtract(1, ordering: .releasing)
            }
            return future
        }
        let promise = eventLoop.makePromise(of: T.self)
        let store = self.store
        fairQueue.submit(tenant: namespace, weight: tenant?.weight ?? 1) {
            operation(store).whenComplete { result in
                fairQueue.finished(tenant: namespace)
                self.inFlight.subtract(1, ordering: .releasing)
                promise.completeWith(result)
            }
        }
        return promise.futureResult
    }

    /// Operations waiting and running in this pool, per tenant (empty for a non-blocking store).
    public var queueDepths: [(tenant: String, queued: Int, running: Int)] { fairQueue?.depths ?? [] }

    /// Bytes stored per tenant.
    public var storedBytes: [String: Int] { store.usageByPartition }

    /// Takes the pool out of service after it was replaced or removed: it is closed once its calls in flight are
    /// done (checked every 100 ms), or after `timeout` at the latest.
    func retire(on eventLoop: any EventLoop, timeout: Duration, logger: Logger) {
        guard !retired.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let deadline = NIODeadline.now() + .nanoseconds(Int64(timeout.components.seconds * 1_000_000_000))
        let spec = self.spec
        eventLoop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { task in
            let busy = self.inFlight.load(ordering: .acquiring)
            guard busy == 0 || NIODeadline.now() >= deadline else { return }
            task.cancel()
            self.store.close(on: eventLoop).whenComplete { _ in
                logger.info(
                    "component closed",
                    metadata: [
                        "component.name": "\(spec.name)", "component.namespace": "\(spec.namespace ?? "*")",
                        "calls.abandoned": "\(busy)",
                    ])
            }
        }
    }
}

/// A caller's view of a state store: keys go in as the app wrote them and are stored under its tenant's prefix.
public struct TenantStateHandle: Sendable {
    public let pool: StatePool
    public let prefix: String
    public let app: AppID
    /// The caller's tenant account (its weight and `maxStateBytes`); nil only in tests without a registry.
    public let tenant: TenantAccount?

    public var store: any StateStore { pool.store }
    public var name: String { pool.spec.name }

    /// The physical key for an app's key, refusing keys that could break partitioning.
    public func physicalKey(_ key: String) throws(APIError) -> String {
        if key.isEmpty { throw RequestError.malformed("the state key is empty") }
        if Names.containsKeySeparator(key) {
            throw APIError(
                errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
                message: "input key/keyPrefix \(Names.quoted(key)) can't contain '||'", reason: "DAPR_STATE_ILLEGAL_KEY")
        }
        return prefix + key
    }

    /// Runs one operation on the store, fairly queued against other tenants when the store blocks.
    func run<T: Sendable>(
        on eventLoop: any EventLoop, _ operation: @escaping @Sendable (any StateStore) -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        pool.run(tenant, namespace: app.namespace, on: eventLoop, operation)
    }
}

/// Every component instance of the node, created once and shared by the tenants allowed to use them. Replaced
/// live by `apply`: an unchanged component keeps its instance; a changed one is re-created and swapped in, and the
/// old instance is closed once the calls it is serving are done.
public final class ComponentHost: Sendable {
    /// A component instance's identity: its namespace (nil when shared) and name.
    private struct PoolKey: Hashable {
        let namespace: String?
        let name: String
    }

    private struct Pools: Sendable {
        var state: [PoolKey: StatePool] = [:]
        var specs: [ComponentSpec] = []
    }

    private let pools: Mutex<Pools>
    private let factory: StateStoreFactory
    private let logger: Logger
    /// How long a replaced component may keep serving calls in flight before it is closed anyway.
    public let retireTimeout: Duration

    /// Creates every component; a component that cannot be created fails start-up with its file and field.
    public init(
        components: [ComponentSpec], stateFactory: StateStoreFactory, retireTimeout: Duration = .seconds(30),
        logger: Logger
    ) throws(ConfigurationError) {
        self.factory = stateFactory
        self.logger = logger
        self.retireTimeout = retireTimeout
        self.pools = Mutex(Pools())
        let (state, _) = try Self.build(components, reusing: [:], factory: stateFactory, logger: logger)
        pools.withLock { $0 = Pools(state: state, specs: components) }
    }

    /// Creates the pools for `components`, reusing those whose spec is unchanged. On failure, every pool created
    /// here is closed again and nothing changes.
    private static func build(
        _ components: [ComponentSpec], reusing existing: [PoolKey: StatePool], factory: StateStoreFactory,
        logger: Logger
    ) throws(ConfigurationError) -> (pools: [PoolKey: StatePool], created: [StatePool]) {
        var pools: [PoolKey: StatePool] = [:]
        var created: [StatePool] = []
        do {
            for spec in components where spec.buildingBlock == "state" {
                let key = PoolKey(namespace: spec.namespace, name: spec.name)
                if let pool = existing[key], pool.spec.sameInstance(as: spec) {
                    pools[key] = pool
                    continue
                }
                let pool = try StatePool(spec: spec, store: try factory.make(spec))
                pools[key] = pool
                created.append(pool)
                logger.info(
                    "component initialised",
                    metadata: [
                        "component.name": "\(spec.name)", "component.type": "\(spec.type)",
                        "component.namespace": "\(spec.namespace ?? "*")",
                    ])
            }
        } catch {
            let loop = factory.eventLoopGroup.any()
            for pool in created { _ = pool.store.close(on: loop) }
            throw error
        }
        return (pools, created)
    }

    /// Switches to a new set of components. New and changed components are created first; if one fails, nothing
    /// changes and the error names its file and field. Replaced and removed instances are retired.
    public func apply(_ components: [ComponentSpec]) throws(ConfigurationError) {
        let existing = pools.withLock { $0.state }
        let (state, created) = try Self.build(components, reusing: existing, factory: factory, logger: logger)
        let retired = pools.withLock { pools -> [StatePool] in
            let old = pools.state
            pools = Pools(state: state, specs: components)
            return old.compactMap { key, pool in state[key] === pool ? nil : pool }
        }
        let loop = factory.eventLoopGroup.any()
        for pool in retired {
            logger.info(
                created.contains { $0.spec.poolKey == pool.spec.poolKey }
                    ? "component changed: the new instance serves new calls; the old one closes when idle"
                    : "component removed: it closes when idle",
                metadata: [
                    "component.name": "\(pool.spec.name)", "component.namespace": "\(pool.spec.namespace ?? "*")",
                ])
            pool.retire(on: loop, timeout: retireTimeout, logger: logger)
        }
    }

    public var specs: [ComponentSpec] { pools.withLock { $0.specs } }

    /// Every live state pool.
    public var statePools: [StatePool] { pools.withLock { Array($0.state.values) } }

    /// The components an app may use, with a namespaced component hiding a shared one of the same name.
    public func visibleComponents(to app: AppID) -> [ComponentSpec] {
        var byName: [String: ComponentSpec] = [:]
        for spec in specs where spec.namespace == nil || spec.namespace == app.namespace {
            if spec.namespace != nil || byName[spec.name] == nil { byName[spec.name] = spec }
        }
        return byName.values.filter { $0.isVisible(to: app) }.sorted { $0.name < $1.name }
    }

    /// The state pool named `name` as the app sees it, or nil when there is none it may use.
    public func statePool(named name: String, for app: AppID) -> StatePool? {
        pools.withLock { pools in
            if let pool = pools.state[PoolKey(namespace: app.namespace, name: name)] {
                return pool.spec.isVisible(to: app) ? pool : nil
            }
            if let pool = pools.state[PoolKey(namespace: nil, name: name)], pool.spec.isVisible(to: app) {
                return pool
            }
            return nil
        }
    }

    /// Whether the app may use any state store at all.
    public func hasStateStores(for app: AppID) -> Bool {
        pools.withLock { $0.state.values.contains { $0.spec.isVisible(to: app) } }
    }

    public func features(of spec: ComponentSpec) -> [String] {
        pools.withLock { $0.state[PoolKey(namespace: spec.namespace, name: spec.name)] }?.store.features.daprNames
            ?? []
    }

    /// Closes every component.
    public func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let closes = statePools.map { $0.store.close(on: eventLoop) }
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }
}
