/// How calls into one app are guarded by its Configuration's access control.
enum AppAccessControl: Sendable {
    /// No Configuration, or one without access control: every call the tenancy rules allow passes.
    case unrestricted
    case list(AccessControlList, configuration: String)
    /// The app's Configuration cannot be used and has no last good version (or the app names none that exists):
    /// calls into the app from other apps are refused, as a Dapr sidecar with a broken Configuration serves none.
    case unusable(String)
}

/// The state of one Configuration resource, for `/v1.0/healthz/detail` and the log.
package struct ConfigurationStatus: Sendable, Hashable {
    package var key: String
    package var name: String
    package var namespace: String?
    package var source: String
    /// Why it cannot be used; nil when it is valid.
    package var error: String?
    /// For an invalid resource: its last good version still guards its apps (else they are refused every call).
    package var lastGoodInForce: Bool
    /// The apps it guards.
    package var apps: [AppID]
}

/// Which Configuration guards each app, compiled from a node configuration; rebuilt on every configuration change,
/// carrying each Configuration's last good access control across changes.
///
/// An app uses the Configuration it names (`spec.apps[].config`: its namespace's, else a node-wide one without
/// `metadata.namespace`); an app that names none uses its namespace's Configuration when the namespace has exactly
/// one, and none when it has none. Dapr gives each sidecar one Configuration (`--config`, the `dapr.io/config`
/// annotation): this is that choice, made per app.
struct AccessControlPolicies: Sendable {
    private(set) var byApp: [AppID: AppAccessControl] = [:]
    /// Which secrets each app may read (`spec.secrets` of the same Configuration); an app not listed may read all.
    private(set) var secretsByApp: [AppID: AppSecretAccess] = [:]
    /// The secret scopes of every Configuration that was valid when last seen.
    private(set) var lastGoodSecrets: [String: SecretScopes] = [:]
    /// The access control of every Configuration that was valid when last seen (nil inside: valid, none declared).
    private(set) var lastGood: [String: AccessControlSpec?] = [:]
    private(set) var statuses: [ConfigurationStatus] = []
    /// Each tenant's trust domain, the callers' side of a policy's `trustDomain`.
    private(set) var trustDomains: [String: String] = [:]

    init() {}

    init(_ configuration: NodeConfiguration, previous: AccessControlPolicies?) {
        var byKey: [String: ConfigurationResource] = [:]
        var inNamespace: [String: [ConfigurationResource]] = [:]
        var primary: Set<Int> = []
        for (index, resource) in configuration.configurations.enumerated() where byKey[resource.key] == nil {
            primary.insert(index)
            byKey[resource.key] = resource
            if let namespace = resource.namespace { inNamespace[namespace, default: []].append(resource) }
            if resource.error == nil {
                lastGood[resource.key] = .some(resource.accessControl)
                lastGoodSecrets[resource.key] = resource.secrets ?? SecretScopes()
            } else if let last = previous?.lastGood[resource.key] {
                lastGood[resource.key] = .some(last)
                lastGoodSecrets[resource.key] = previous?.lastGoodSecrets[resource.key]
            }
        }
        var compiled: [String: AccessControlList?] = [:]
        var users: [String: [AppID]] = [:]
        for (id, app, tenant) in configuration.apps {
            trustDomains[tenant.namespace] = tenant.trustDomain
            let resource: ConfigurationResource
            if let name = app.config {
                guard let named = byKey["\(tenant.namespace)/\(name)"] ?? byKey["*/\(name)"] else {
                    let reason =
                        "its Configuration '\(name)' (spec.apps[].config) is not declared in namespace "
                        + "'\(tenant.namespace)' nor node-wide"
                    byApp[id] = .unusable(reason)
                    secretsByApp[id] = .unusable(reason)
                    continue
                }
                resource = named
            } else {
                let candidates = inNamespace[tenant.namespace] ?? []
                guard let only = candidates.first else {
                    byApp[id] = .unrestricted
                    continue
                }
                guard candidates.count == 1 else {
                    let reason =
                        "namespace '\(tenant.namespace)' has several Configurations ("
                        + candidates.map(\.name).sorted().joined(separator: ", ")
                        + "): name the app's in spec.apps[].config"
                    byApp[id] = .unusable(reason)
                    secretsByApp[id] = .unusable(reason)
                    continue
                }
                resource = only
            }
            users[resource.key, default: []].append(id)
            secretsByApp[id] =
                lastGoodSecrets[resource.key].map(AppSecretAccess.scopes)
                ?? .unusable(
                    "its Configuration '\(resource.key)' is invalid: \(resource.error?.description ?? "unknown error")")
            guard let effective = lastGood[resource.key] else {
                byApp[id] = .unusable(
                    "its Configuration '\(resource.key)' is invalid: \(resource.error?.description ?? "unknown error")")
                continue
            }
            guard let spec = effective else {
                byApp[id] = .unrestricted
                continue
            }
            let isHTTP = app.appChannel?.protocol == .http
            let cacheKey = "\(resource.key)|\(isHTTP)"
            let list: AccessControlList?
            if let cached = compiled[cacheKey] {
                list = cached
            } else {
                list = AccessControlList(spec, isHTTP: isHTTP)
                compiled[cacheKey] = .some(list)
            }
            byApp[id] = list.map { .list($0, configuration: resource.key) } ?? .unrestricted
        }
        // Every resource is reported, a second declaration of a name too (it guards nothing).
        statuses = configuration.configurations.enumerated().map { index, resource in
            let isPrimary = primary.contains(index)
            return ConfigurationStatus(
                key: resource.key, name: resource.name, namespace: resource.namespace, source: resource.source,
                error: resource.error?.description,
                lastGoodInForce: isPrimary && resource.error != nil && lastGood[resource.key] != nil,
                apps: isPrimary ? (users[resource.key] ?? []).sorted { $0.description < $1.description } : [])
        }.sorted { ($0.key, $0.source) < ($1.key, $1.source) }
    }
}
