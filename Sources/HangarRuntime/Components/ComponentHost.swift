public import Foundation
public import HangarComponents
public import Logging
public import NIOCore
import NIOPosix
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
        // Concatenation rather than interpolation: this runs on every state call.
        case .appId: app.namespace + "||" + app.appId + "||"
        case .componentName: app.namespace + "||" + component + "||"
        case .namespacedAppId: app.namespace + "||" + app.namespace + "." + app.appId + "||"
        case .none: app.namespace + "||"
        case .literal(let literal): app.namespace + "||" + literal + "||"
        }
    }
}

/// A component's health, as `/healthz/detail` and the metadata API report it. Ordered from best to worst, so the
/// worst of several is their `max()`.
public enum ComponentStatus: String, Sendable, Hashable, Comparable, CaseIterable {
    /// Serving.
    case up = "UP"
    /// Not initialised yet: its first attempt is running.
    case initialising = "INIT"
    /// Its initialisation failed; it is retried with backoff, and calls to it are refused meanwhile.
    case down = "DOWN"

    var rank: Int {
        switch self {
        case .up: 0
        case .initialising: 1
        case .down: 2
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
}

/// One component's health at a moment.
public struct ComponentHealth: Sendable, Hashable {
    public var name: String
    /// The namespace of a tenant's own component; nil for a shared one.
    public var namespace: String?
    public var type: String
    public var status: ComponentStatus
    /// Why it is DOWN (the last attempt's error).
    public var error: String?
    /// Initialisation attempts so far.
    public var attempts: Int
    /// When the status last changed.
    public var since: Date
}

/// One live state store shared by every tenant allowed to use it (a component pool). Every operation goes through
/// `run`, which counts it (so a replaced pool is closed only once its calls in flight are done) and, for a store
/// whose operations block (SQLite's thread pool), queues it fairly between tenants.
///
/// A pool is created before its store is open: a store that never blocks opens at once; a blocking one is
/// `INIT` until `open` succeeds. A failed open leaves the pool `DOWN` and is retried with backoff (1 s doubling to
/// 30 s) until it succeeds or the pool is retired; calls meanwhile are refused with `UNAVAILABLE`.
public final class StatePool: Sendable {
    public let spec: ComponentSpec
    public let keyPrefix: KeyPrefixPolicy
    let fairQueue: FairQueue?
    private let recipe: StateStoreRecipe
    private let eventLoopGroup: any EventLoopGroup
    private let inFlight = Atomic<Int>(0)
    private let retired = Atomic<Bool>(false)

    private enum Phase {
        case initialising
        case up(any StateStore)
        case down(String)
        case closed
    }

    private struct State {
        var phase: Phase = .initialising
        var attempts = 0
        var since = Date()
    }

    private let state = Mutex(State())

    /// Operations a blocking store runs at once, unless its metadata sets `maxConcurrentOperations`.
    static let defaultCapacity = 8
    /// Delays between initialisation attempts of a DOWN component.
    static let firstRetryDelay: Duration = .seconds(1)
    static let maxRetryDelay: Duration = .seconds(30)

    init(spec: ComponentSpec, recipe: StateStoreRecipe, eventLoopGroup: any EventLoopGroup) throws(ConfigurationError) {
        self.spec = spec
        self.recipe = recipe
        self.eventLoopGroup = eventLoopGroup
        self.keyPrefix = try KeyPrefixPolicy(spec.metadata["keyPrefix"], source: spec.source)
        if recipe.executesInline {
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

    /// Whether the store never blocks: it is opened at once, where it is created, and needs no fair queue.
    var opensInline: Bool { recipe.executesInline }

    /// The open store, or nil while the pool is not UP.
    public var store: (any StateStore)? {
        state.withLock { state in
            if case .up(let store) = state.phase { return store }
            return nil
        }
    }

    public var health: ComponentHealth {
        state.withLock { state in
            let (status, error): (ComponentStatus, String?) =
                switch state.phase {
                case .initialising: (.initialising, nil)
                case .up: (.up, nil)
                case .down(let error): (.down, error)
                case .closed: (.down, "closed")
                }
            return ComponentHealth(
                name: spec.name, namespace: spec.namespace, type: spec.type, status: status, error: error,
                attempts: state.attempts, since: state.since)
        }
    }

    /// One initialisation attempt, blocking the calling thread for a store that does not run inline. Returns
    /// the error when it failed (the pool is DOWN then).
    @discardableResult
    func open() -> (any Error)? {
        if case .up = state.withLock({ $0.phase }) { return nil }
        let opened: Result<any StateStore, any Error> = Result { try recipe.open() }
        let leftOver = state.withLock { state -> (any StateStore)? in
            switch (state.phase, opened) {
            case (.closed, .success(let store)), (.up, .success(let store)):
                // Retired while opening, or opened meanwhile by another attempt: this store is never served.
                return store
            case (.closed, .failure), (.up, .failure):
                return nil
            case (.initialising, _), (.down, _):
                break
            }
            state.attempts += 1
            let before = state.phase
            switch opened {
            case .success(let store): state.phase = .up(store)
            case .failure(let error): state.phase = .down("\(error)")
            }
            // `since` is when the status last changed: not on a retry that fails again.
            if case .down = before, case .down = state.phase {} else { state.since = Date() }
            return nil
        }
        if let leftOver { _ = leftOver.close(on: eventLoopGroup.any()) }
        if case .failure(let error) = opened { return error }
        return nil
    }

    /// Opens the store on `threadPool` (or at once when it runs inline), then, while it is DOWN, tries again with
    /// backoff until it is UP or the pool is retired. The future completes after the first attempt.
    func initialise(threadPool: NIOThreadPool, eventLoop: any EventLoop, logger: Logger) -> EventLoopFuture<Void> {
        let attempted: EventLoopFuture<(any Error)?> =
            recipe.executesInline
            ? eventLoop.makeSucceededFuture(open())
            : threadPool.runIfActive(eventLoop: eventLoop) { self.open() }
        return attempted.map { failure in
            self.attempted(
                failure, threadPool: threadPool, eventLoop: eventLoop, nextDelay: Self.firstRetryDelay, logger: logger)
        }.recover { _ in }  // the thread pool is shutting down
    }

    /// Logs an attempt's outcome and, after a failure, schedules the next one.
    func attempted(
        _ failure: (any Error)?, threadPool: NIOThreadPool, eventLoop: any EventLoop, nextDelay: Duration,
        logger: Logger
    ) {
        var metadata = ComponentHost.metadata(spec)
        metadata["component.attempts"] = "\(health.attempts)"
        guard let failure else {
            logger.info("component initialised", metadata: metadata)
            return
        }
        guard !retired.load(ordering: .acquiring) else { return }
        metadata["error"] = "\(failure)"
        metadata["retry.in"] = "\(nextDelay)"
        logger.error("component failed to initialise; it is DOWN and will be retried", metadata: metadata)
        eventLoop.scheduleTask(in: TimeAmount(nextDelay)) {
            guard !self.retired.load(ordering: .acquiring) else { return }
            threadPool.runIfActive(eventLoop: eventLoop) { self.open() }.whenSuccess { failure in
                self.attempted(
                    failure, threadPool: threadPool, eventLoop: eventLoop,
                    nextDelay: min(nextDelay * 2, Self.maxRetryDelay), logger: logger)
            }
        }
    }

    /// The tenant-scoped handle for one caller: the single place where state keys are partitioned. Refused with
    /// `UNAVAILABLE` while the store is not UP.
    public func handle(for app: AppID, tenant: TenantAccount?) throws(APIError) -> TenantStateHandle {
        guard let store else { throw StateAPIError.unavailable(health) }
        return TenantStateHandle(
            pool: self, store: store, prefix: keyPrefix.prefix(for: app, component: spec.name), app: app,
            tenant: tenant)
    }

    /// Runs one store operation for `tenant`: at once for a non-blocking store, else through the fair queue.
    func run<T: Sendable>(
        _ tenant: TenantAccount?, namespace: String, store: any StateStore, on eventLoop: any EventLoop,
        _ operation: @escaping @Sendable (any StateStore) -> Eventual<T>
    ) -> Eventual<T> {
        inFlight.add(1, ordering: .relaxed)
        guard let fairQueue else {
            let outcome = operation(store)
            switch outcome {
            case .ready: inFlight.subtract(1, ordering: .releasing)
            case .later(let future): future.whenComplete { _ in self.inFlight.subtract(1, ordering: .releasing) }
            }
            return outcome
        }
        if fairQueue.tryAcquire(tenant: namespace) {
            let outcome = operation(store)
            outcome.whenComplete { _ in
                fairQueue.finished(tenant: namespace)
                self.inFlight.subtract(1, ordering: .releasing)
            }
            return outcome
        }
        let promise = eventLoop.makePromise(of: T.self)
        fairQueue.submit(tenant: namespace, weight: tenant?.weight ?? 1) {
            operation(store).whenComplete { result in
                fairQueue.finished(tenant: namespace)
                self.inFlight.subtract(1, ordering: .releasing)
                promise.completeWith(result)
            }
        }
        return .later(promise.futureResult)
    }

    /// Operations waiting and running in this pool, per tenant (empty for a non-blocking store).
    public var queueDepths: [(tenant: String, queued: Int, running: Int)] { fairQueue?.depths ?? [] }

    /// Bytes stored per tenant (nothing while the store is not open).
    public var storedBytes: [String: Int] { store?.usageByPartition ?? [:] }

    /// Stops retrying and closes the store now, if it is open.
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        retired.store(true, ordering: .releasing)
        let store = state.withLock { state -> (any StateStore)? in
            defer { state.phase = .closed }
            if case .up(let store) = state.phase { return store }
            return nil
        }
        return store?.close(on: eventLoop) ?? eventLoop.makeSucceededVoidFuture()
    }

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
            self.close(on: eventLoop).whenComplete { _ in
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
    /// The pool's store, open when the handle was made.
    public let store: any StateStore
    public let prefix: String
    public let app: AppID
    /// The caller's tenant account (its weight and `maxStateBytes`); nil only in tests without a registry.
    public let tenant: TenantAccount?

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
        on eventLoop: any EventLoop, _ operation: @escaping @Sendable (any StateStore) -> Eventual<T>
    ) -> Eventual<T> {
        pool.run(tenant, namespace: app.namespace, store: store, on: eventLoop, operation)
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

    /// Checks every component and creates its pool; a component whose spec is invalid fails start-up with its file
    /// and field. Stores that never block are open at once; the others are `INIT` until `initialise()`.
    public init(
        components: [ComponentSpec], stateFactory: StateStoreFactory, retireTimeout: Duration = .seconds(30),
        logger: Logger
    ) throws(ConfigurationError) {
        self.factory = stateFactory
        self.logger = logger
        self.retireTimeout = retireTimeout
        self.pools = Mutex(Pools())
        let state = try Self.build(components, reusing: [:], factory: stateFactory)
        for pool in state.values where pool.opensInline {
            pool.attempted(
                pool.open(), threadPool: stateFactory.threadPool, eventLoop: stateFactory.eventLoopGroup.any(),
                nextDelay: StatePool.firstRetryDelay, logger: logger)
        }
        pools.withLock { $0 = Pools(state: state, specs: components) }
    }

    /// Opens every component not open yet, concurrently, and returns once each has made its first attempt. One
    /// that fails is DOWN, retried in the background, and does not stop the others.
    public func initialise() async {
        let loop = factory.eventLoopGroup.any()
        // Stores that run inline were opened (and, failing, put on retry) when their pool was made.
        let attempts = statePools.filter { !$0.opensInline && $0.health.status == .initialising }.map {
            $0.initialise(threadPool: factory.threadPool, eventLoop: loop, logger: logger)
        }
        try? await EventLoopFuture.andAllComplete(attempts, on: loop).get()
    }

    /// Creates the pools for `components` (their stores not opened), reusing those whose spec is unchanged.
    private static func build(
        _ components: [ComponentSpec], reusing existing: [PoolKey: StatePool], factory: StateStoreFactory
    ) throws(ConfigurationError) -> [PoolKey: StatePool] {
        var pools: [PoolKey: StatePool] = [:]
        for spec in components where spec.buildingBlock == "state" {
            let key = PoolKey(namespace: spec.namespace, name: spec.name)
            if let pool = existing[key], pool.spec.sameInstance(as: spec) {
                pools[key] = pool
                continue
            }
            pools[key] = try StatePool(
                spec: spec, recipe: try factory.recipe(spec), eventLoopGroup: factory.eventLoopGroup)
        }
        return pools
    }

    /// Switches to a new set of components. A spec that is invalid rejects the whole change (nothing changes; the
    /// error names its file and field). New and changed components are opened before the switch, so calls move to
    /// a working instance; one that fails to open goes in DOWN and is retried. Replaced and removed instances are
    /// retired.
    public func apply(_ components: [ComponentSpec]) throws(ConfigurationError) {
        let existing = pools.withLock { $0.state }
        let state = try Self.build(components, reusing: existing, factory: factory)
        let created = state.values.filter { pool in !existing.values.contains { $0 === pool } }
        let loop = factory.eventLoopGroup.any()
        for pool in created {
            // Blocking, as reconfiguration runs off the event loops; retries run in the background.
            pool.attempted(
                pool.open(), threadPool: factory.threadPool, eventLoop: loop, nextDelay: StatePool.firstRetryDelay,
                logger: logger)
        }
        let retired = pools.withLock { pools -> [StatePool] in
            let old = pools.state
            pools = Pools(state: state, specs: components)
            return old.compactMap { key, pool in state[key] === pool ? nil : pool }
        }
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

    static func metadata(_ spec: ComponentSpec) -> Logger.Metadata {
        [
            "component.name": "\(spec.name)", "component.type": "\(spec.type)",
            "component.namespace": "\(spec.namespace ?? "*")",
        ]
    }

    /// Every component's health, shared ones first, then by namespace and name.
    public var health: [ComponentHealth] {
        statePools.map(\.health).sorted { ($0.namespace ?? "", $0.name) < ($1.namespace ?? "", $1.name) }
    }

    /// Whether every component has made its first initialisation attempt (none is `INIT`).
    public var initialised: Bool { !statePools.contains { $0.health.status == .initialising } }

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
        pools.withLock { $0.state[PoolKey(namespace: spec.namespace, name: spec.name)] }?.store?.features.daprNames
            ?? []
    }

    /// The health of the components an app may use.
    public func health(visibleTo app: AppID) -> [ComponentHealth] {
        let visible = Set(visibleComponents(to: app).map(\.poolKey))
        return pools.withLock { pools in
            pools.state.values.filter { visible.contains($0.spec.poolKey) }.map(\.health)
        }.sorted { $0.name < $1.name }
    }

    /// Closes every component.
    public func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let closes = statePools.map { $0.close(on: eventLoop) }
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }
}
