import Foundation

/// Per-tenant (or per-app) limits, enforced by the gate (`QuotaAccount`).
///
/// On a tenant, `requestsPerSecond`/`burst`, `maxConcurrentRequests`, `maxStateBytes`, `maxPubsubBytes` and
/// `maxSubscriptions` are the tenant's totals, shared by all its apps; `maxRequestBytes` and `maxConnections` apply to each app. On an app they
/// give that app its own, narrower budget (the tenant's totals still apply) and replace
/// `maxRequestBytes`/`maxConnections`.
/// `maxStreams` (long-lived gRPC streams, which do not count as requests in flight) applies to each app.
public struct Quotas: Sendable, Hashable {
    package var requestsPerSecond: Int?
    package var burst: Int?
    package var maxConcurrentRequests: Int?
    package var maxRequestBytes: Int?
    package var maxStateBytes: Int?
    package var maxConnections: Int?
    package var maxStreams: Int?
    /// Bytes the tenant's topics may retain in each pub/sub component (messages published and not yet trimmed).
    package var maxPubsubBytes: Int?
    /// Subscriptions the tenant's apps hold at once on the node: streaming subscriptions open and push
    /// subscriptions (declarative and programmatic) in effect. Each holds a delivery loop and an in-flight window.
    package var maxSubscriptions: Int?
    /// Request bytes the node may hold buffered for the tenant's calls at once (partial messages and bodies, requests
    /// waiting for their answer), its share of the node's `--max-buffered-bytes`.
    package var maxBufferedBytes: Int?

    public init(
        requestsPerSecond: Int? = nil, burst: Int? = nil, maxConcurrentRequests: Int? = nil,
        maxRequestBytes: Int? = nil, maxStateBytes: Int? = nil, maxConnections: Int? = nil, maxStreams: Int? = nil,
        maxPubsubBytes: Int? = nil, maxSubscriptions: Int? = nil, maxBufferedBytes: Int? = nil
    ) {
        self.requestsPerSecond = requestsPerSecond
        self.burst = burst
        self.maxConcurrentRequests = maxConcurrentRequests
        self.maxRequestBytes = maxRequestBytes
        self.maxStateBytes = maxStateBytes
        self.maxConnections = maxConnections
        self.maxStreams = maxStreams
        self.maxPubsubBytes = maxPubsubBytes
        self.maxSubscriptions = maxSubscriptions
        self.maxBufferedBytes = maxBufferedBytes
    }

    /// What a tenant that sets no quota gets: generous for one app, but bounded so that no tenant can take a
    /// shared node's threads, memory or file descriptors. Documented in `tenancy/README.md`.
    package static let defaults = Quotas(
        requestsPerSecond: 5000, burst: 10000, maxConcurrentRequests: 64, maxRequestBytes: nil,
        maxStateBytes: 1 << 30, maxConnections: 256, maxStreams: 100, maxPubsubBytes: 1 << 30,
        maxSubscriptions: 1000, maxBufferedBytes: 64 << 20)

    /// These quotas with every field not given taken from `fallback`.
    package func merged(over fallback: Quotas) -> Quotas {
        var merged = Quotas(
            requestsPerSecond: requestsPerSecond ?? fallback.requestsPerSecond,
            burst: requestsPerSecond != nil ? burst : fallback.burst,
            maxConcurrentRequests: maxConcurrentRequests ?? fallback.maxConcurrentRequests,
            maxRequestBytes: maxRequestBytes ?? fallback.maxRequestBytes,
            maxStateBytes: maxStateBytes ?? fallback.maxStateBytes,
            maxConnections: maxConnections ?? fallback.maxConnections,
            maxStreams: maxStreams ?? fallback.maxStreams,
            maxPubsubBytes: maxPubsubBytes ?? fallback.maxPubsubBytes,
            maxSubscriptions: maxSubscriptions ?? fallback.maxSubscriptions,
            maxBufferedBytes: maxBufferedBytes ?? fallback.maxBufferedBytes)
        if merged.burst == nil, let rate = merged.requestsPerSecond { merged.burst = rate }
        return merged
    }

    static let fields: Set<String> = [
        "requestsPerSecond", "burst", "maxConcurrentRequests", "maxRequestBytes", "maxStateBytes", "maxConnections",
        "maxStreams", "maxPubsubBytes", "maxSubscriptions", "maxBufferedBytes",
    ]

    init(_ node: YAMLMapping, app: Bool = false) throws(ConfigurationError) {
        try node.rejectUnknownKeys(Self.fields)
        if app, node.has("maxStateBytes") {
            throw node.error(
                "maxStateBytes", "is a tenant quota (bytes stored per tenant per state store); set it in spec.quotas")
        }
        if app, node.has("maxPubsubBytes") {
            throw node.error(
                "maxPubsubBytes",
                "is a tenant quota (bytes retained per tenant per pub/sub component); set it in spec.quotas")
        }
        if app, node.has("maxBufferedBytes") {
            throw node.error(
                "maxBufferedBytes",
                "is a tenant quota (request bytes the node buffers for the tenant's calls); set it in spec.quotas")
        }
        if app, node.has("maxSubscriptions") {
            throw node.error(
                "maxSubscriptions", "is a tenant quota (subscriptions held by the tenant's apps); set it in spec.quotas")
        }
        func positive(_ key: String) throws(ConfigurationError) -> Int? {
            guard let value = try node.int(key) else { return nil }
            guard value > 0 else { throw node.error(key, "must be a positive integer") }
            return value
        }
        requestsPerSecond = try positive("requestsPerSecond")
        burst = try positive("burst")
        maxConcurrentRequests = try positive("maxConcurrentRequests")
        maxRequestBytes = try positive("maxRequestBytes")
        maxStateBytes = try positive("maxStateBytes")
        maxConnections = try positive("maxConnections")
        maxStreams = try positive("maxStreams")
        maxPubsubBytes = try positive("maxPubsubBytes")
        maxSubscriptions = try positive("maxSubscriptions")
        maxBufferedBytes = try positive("maxBufferedBytes")
        if burst != nil, requestsPerSecond == nil {
            throw node.error("burst", "needs requestsPerSecond")
        }
    }
}

/// One app of a tenant.
public struct AppSpec: Sendable, Hashable {
    package var appId: String
    /// Peer uids allowed on the app's sockets; empty means any.
    package var uids: [UInt32]
    /// Peer gids allowed on the app's sockets; empty means any.
    package var gids: [UInt32]
    /// The token that identifies this app on the TCP listeners (from `apiToken` or `apiTokenFile`).
    package var apiToken: String?
    package var apiTokenFile: String?
    package var quotas: Quotas?
    /// How the runtime calls into the app; nil when the app serves no app channel (it is never invoked then).
    package var appChannel: AppChannelSpec?
    /// The name of the Configuration resource whose `accessControl` guards calls into the app (Dapr's
    /// `dapr.io/config`); nil for its namespace's only Configuration, if any.
    package var config: String?

    public init(
        appId: String, uids: [UInt32] = [], gids: [UInt32] = [], apiToken: String? = nil, quotas: Quotas? = nil
    ) {
        self.appId = appId
        self.uids = uids
        self.gids = gids
        self.apiToken = apiToken
        self.quotas = quotas
    }
}

/// Hangar's `Tenant` resource (`hangar.dev/v1alpha1`): one namespace, its apps and its quotas.
public struct TenantSpec: Sendable, Hashable {
    package var namespace: String
    package var apps: [AppSpec]
    package var quotas: Quotas
    /// The tenant's share of a contended component pool relative to other tenants (`spec.weight`, default 1).
    package var weight: Int
    /// Apps of other namespaces allowed to invoke this tenant's apps (`spec.allowInvocationFrom`); none by default.
    package var allowInvocationFrom: [InvocationGrant] = []
    /// The trust domain of the tenant's apps as callers, which Configuration access-control policies name
    /// (`spec.trustDomain`; Dapr's default, `public`, when not given).
    package var trustDomain: String = "public"
    package var source: String

    public init(
        namespace: String, apps: [AppSpec], quotas: Quotas = Quotas(), weight: Int = 1, source: String = "<embedded>"
    ) {
        self.namespace = namespace
        self.apps = apps
        self.quotas = quotas
        self.weight = weight
        self.source = source
    }

    /// The weight a tenant may have at most.
    package static let maxWeight = 100

    package static let apiVersion = "hangar.dev/v1alpha1"

    init(document: YAMLMapping) throws(ConfigurationError) {
        try document.rejectUnknownKeys(["apiVersion", "kind", "metadata", "spec"])
        let apiVersion = try document.string("apiVersion")
        guard apiVersion == Self.apiVersion else {
            throw document.error("apiVersion", "must be \(Self.apiVersion), not '\(apiVersion ?? "")'")
        }
        guard let metadata = try document.mapping("metadata") else { throw document.error("metadata", "is required") }
        // The Tenant's name *is* its namespace; a `metadata.namespace` here would be a misunderstanding.
        try metadata.rejectUnknownKeys(["name", "labels", "annotations"])
        namespace = try metadata.requiredString("name")
        if let problem = Names.dns1123Problem(namespace) { throw metadata.error("name", problem) }
        source = document.path
        guard let spec = try document.mapping("spec") else { throw document.error("spec", "is required") }
        try spec.rejectUnknownKeys(["apps", "quotas", "weight", "allowInvocationFrom", "trustDomain"])
        quotas = try spec.mapping("quotas").map { (node) throws(ConfigurationError) in try Quotas(node) } ?? Quotas()
        weight = try spec.int("weight") ?? 1
        guard (1...Self.maxWeight).contains(weight) else {
            throw spec.error("weight", "must be an integer from 1 to \(Self.maxWeight)")
        }
        if let trustDomain = try spec.string("trustDomain") {
            guard !trustDomain.isEmpty, trustDomain.utf8.count <= 255,
                trustDomain.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) })
            else {
                throw spec.error("trustDomain", "must be a trust domain name such as public or example.org")
            }
            self.trustDomain = trustDomain.lowercased()
        }
        for (index, item) in try spec.list("allowInvocationFrom").enumerated() {
            let node = try YAMLMapping(
                path: document.path, field: spec.fieldPath("allowInvocationFrom[\(index)]"), value: item)
            allowInvocationFrom.append(try InvocationGrant(node))
        }
        var apps: [AppSpec] = []
        var seen: Set<String> = []
        for (index, item) in try spec.list("apps").enumerated() {
            let node = try YAMLMapping(path: document.path, field: spec.fieldPath("apps[\(index)]"), value: item)
            try node.rejectUnknownKeys([
                "appId", "uids", "gids", "apiToken", "apiTokenFile", "quotas", "appChannel", "config",
            ])
            let appId = try node.requiredString("appId")
            if let problem = Names.dns1123Problem(appId) { throw node.error("appId", problem) }
            guard seen.insert(appId).inserted else { throw node.error("appId", "'\(appId)' is declared twice") }
            func ids(_ key: String) throws(ConfigurationError) -> [UInt32] {
                try node.intList(key).map { (id) throws(ConfigurationError) in
                    guard let value = UInt32(exactly: id) else { throw node.error(key, "\(id) is not a valid id") }
                    return value
                }
            }
            var app = AppSpec(appId: appId, uids: try ids("uids"), gids: try ids("gids"))
            app.apiToken = try TokenSource.read(
                node, tokenKey: "apiToken", fileKey: "apiTokenFile", documentPath: document.path)
            app.apiTokenFile = try node.string("apiTokenFile").map { TokenSource.resolve($0, documentPath: document.path) }
            app.quotas = try node.mapping("quotas").map { (node) throws(ConfigurationError) in
                try Quotas(node, app: true)
            }
            app.appChannel = try node.mapping("appChannel").map { (node) throws(ConfigurationError) in
                try AppChannelSpec(node, documentPath: document.path)
            }
            app.config = try node.string("config")
            if let config = app.config, let problem = Names.dns1123Problem(config) {
                throw node.error("config", problem)
            }
            apps.append(app)
        }
        if apps.isEmpty { throw spec.error("apps", "declares no app") }
        self.apps = apps
    }
}
