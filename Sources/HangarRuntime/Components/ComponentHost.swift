public import HangarComponents
public import Logging
public import NIOCore

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

/// One live state store shared by every tenant allowed to use it (a component pool).
public final class StatePool: Sendable {
    public let spec: ComponentSpec
    public let store: any StateStore
    public let keyPrefix: KeyPrefixPolicy

    init(spec: ComponentSpec, store: any StateStore) throws(ConfigurationError) {
        self.spec = spec
        self.store = store
        self.keyPrefix = try KeyPrefixPolicy(spec.metadata["keyPrefix"], source: spec.source)
    }

    /// The tenant-scoped handle for one caller: the single place where state keys are partitioned.
    public func handle(for app: AppID) -> TenantStateHandle {
        TenantStateHandle(pool: self, prefix: keyPrefix.prefix(for: app, component: spec.name))
    }
}

/// A caller's view of a state store: keys go in as the app wrote them and are stored under its tenant's prefix.
public struct TenantStateHandle: Sendable {
    public let pool: StatePool
    public let prefix: String

    public var store: any StateStore { pool.store }
    public var name: String { pool.spec.name }

    /// The physical key for an app's key, refusing keys that could break partitioning.
    public func physicalKey(_ key: String) throws(APIError) -> String {
        if key.isEmpty { throw RequestError.malformed("the state key is empty") }
        if Names.containsKeySeparator(key) {
            throw APIError(
                errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
                message: "input key/keyPrefix '\(key)' can't contain '||'", reason: "DAPR_STATE_ILLEGAL_KEY")
        }
        return prefix + key
    }
}

/// Every component instance of the node, created once and shared by the tenants allowed to use them.
public final class ComponentHost: Sendable {
    /// A component instance's identity: its namespace (nil when shared) and name.
    private struct PoolKey: Hashable {
        let namespace: String?
        let name: String
    }

    private let statePools: [PoolKey: StatePool]
    public let specs: [ComponentSpec]
    private let logger: Logger

    /// Creates every component; a component that cannot be created fails start-up with its file and field.
    public init(
        components: [ComponentSpec], stateFactory: StateStoreFactory, logger: Logger
    ) throws(ConfigurationError) {
        var pools: [PoolKey: StatePool] = [:]
        for spec in components where spec.buildingBlock == "state" {
            let store = try stateFactory.make(spec)
            pools[PoolKey(namespace: spec.namespace, name: spec.name)] = try StatePool(spec: spec, store: store)
            logger.info(
                "component initialised",
                metadata: [
                    "component.name": "\(spec.name)", "component.type": "\(spec.type)",
                    "component.namespace": "\(spec.namespace ?? "*")",
                ])
        }
        self.statePools = pools
        self.specs = components
        self.logger = logger
    }

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
        if let pool = statePools[PoolKey(namespace: app.namespace, name: name)] {
            return pool.spec.isVisible(to: app) ? pool : nil
        }
        if let pool = statePools[PoolKey(namespace: nil, name: name)], pool.spec.isVisible(to: app) { return pool }
        return nil
    }

    /// Whether the app may use any state store at all.
    public func hasStateStores(for app: AppID) -> Bool {
        statePools.values.contains { $0.spec.isVisible(to: app) }
    }

    public func features(of spec: ComponentSpec) -> [String] {
        statePools[PoolKey(namespace: spec.namespace, name: spec.name)]?.store.features.daprNames ?? []
    }

    /// Closes every component.
    public func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let closes = statePools.values.map { $0.store.close(on: eventLoop) }
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }
}
