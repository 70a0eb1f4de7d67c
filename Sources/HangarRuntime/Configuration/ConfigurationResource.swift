/// A Dapr `Configuration` resource (`dapr.io/v1alpha1`) from `--resources`. Hangar reads its
/// `spec.accessControl` (service invocation's allow-list, enforced on the callee's side) and `spec.secrets`
/// (which secrets its apps may read); its other fields (tracing, metrics, features, ...) are not supported yet and
/// are ignored with a warning.
///
/// Unlike a Component, an invalid Configuration does not reject the whole configuration change: it is kept here
/// with its `error`, reported in the log and in `/v1.0/healthz/detail`, and the apps that use it are guarded by
/// its last good version, or refused every call when it never had one (as a Dapr sidecar with a broken
/// Configuration does not start).
package struct ConfigurationResource: Sendable, Hashable, NamedResource {
    static let kind = "Configuration"

    package var name: String
    /// nil: node-wide, used only by apps that name it; otherwise a resource of that namespace.
    package var namespace: String?
    /// nil when the resource declares no access control (calls are then allowed) or is invalid.
    package var accessControl: AccessControlSpec?
    /// `spec.secrets.scopes`; nil when not declared (every secret allowed) or the resource is invalid.
    package var secrets: SecretScopes?
    /// Why the resource cannot be used, with its file and field.
    package var error: ConfigurationError?
    /// Fields of `spec` that Hangar does not support and ignores.
    package var ignoredFields: [String] = []
    package var source: String

    package init(
        name: String, namespace: String? = nil, accessControl: AccessControlSpec? = nil, source: String = "<embedded>"
    ) {
        self.name = name
        self.namespace = namespace
        self.accessControl = accessControl
        self.source = source
    }

    package static let apiVersion = "dapr.io/v1alpha1"

    /// Reads a `kind: Configuration` document; never throws: what is wrong becomes `error`.
    init(document: YAMLMapping) {
        source = document.path
        name = ""
        do throws(ConfigurationError) {
            let apiVersion = try document.string("apiVersion")
            guard apiVersion == Self.apiVersion else {
                throw document.error("apiVersion", "must be \(Self.apiVersion), not '\(apiVersion ?? "")'")
            }
            (name, namespace) = try Self.identity(of: document)
            guard let spec = try document.mapping("spec") else { return }
            ignoredFields = spec.values.keys.filter { $0 != "accessControl" && $0 != "secrets" }.sorted()
            if let node = try spec.mapping("accessControl") {
                accessControl = try AccessControlSpec(node)
            }
            if let node = try spec.mapping("secrets") {
                secrets = try SecretScopes(node)
            }
        } catch {
            invalidate(error)
        }
    }

    mutating func invalidate(_ error: ConfigurationError) {
        self.error = error
        accessControl = nil
        secrets = nil
    }
}

/// `spec.accessControl` of a Configuration, as written (Dapr's `AccessControlSpec`): who may invoke the apps that
/// use it, and which of their operations.
///
/// ```yaml
/// accessControl:
///   defaultAction: deny            # allow | deny; without it: deny when policies are given (or the list is absent)
///   trustDomain: public
///   policies:
///     - appId: caller              # required
///       namespace: team-a          # required
///       trustDomain: public        # required
///       defaultAction: deny
///       operations:
///         - {name: /orders/**, httpVerb: [GET, POST], action: allow}
/// ```
package struct AccessControlSpec: Sendable, Hashable {
    /// One operation rule of a policy.
    package struct Operation: Sendable, Hashable {
        package var name: String
        package var httpVerbs: [String]
        package var action: String

        package init(name: String, httpVerbs: [String] = [], action: String) {
            self.name = name
            self.httpVerbs = httpVerbs
            self.action = action
        }
    }

    /// The rules for calls from one app.
    package struct Policy: Sendable, Hashable {
        package var appId: String
        package var namespace: String
        package var trustDomain: String
        package var defaultAction: String?
        package var operations: [Operation]

        package init(
            appId: String, namespace: String, trustDomain: String = "public", defaultAction: String? = nil,
            operations: [Operation] = []
        ) {
            self.appId = appId
            self.namespace = namespace
            self.trustDomain = trustDomain
            self.defaultAction = defaultAction
            self.operations = operations
        }
    }

    package var defaultAction: String?
    package var trustDomain: String?
    /// nil when `policies` is not given at all, which Dapr tells apart from an empty list (see `AccessControlList`).
    package var policies: [Policy]?

    package init(defaultAction: String? = nil, trustDomain: String? = nil, policies: [Policy]? = nil) {
        self.defaultAction = defaultAction
        self.trustDomain = trustDomain
        self.policies = policies
    }

    init(_ node: YAMLMapping) throws(ConfigurationError) {
        try node.rejectUnknownKeys(["defaultAction", "trustDomain", "policies"])
        defaultAction = try node.string("defaultAction").flatMap { $0.isEmpty ? nil : $0 }
        trustDomain = try node.string("trustDomain").flatMap { $0.isEmpty ? nil : $0 }
        guard node.has("policies") else { return }
        var policies: [Policy] = []
        for (index, item) in try node.list("policies").enumerated() {
            let entry = try YAMLMapping(path: node.path, field: node.fieldPath("policies[\(index)]"), value: item)
            try entry.rejectUnknownKeys(["appId", "namespace", "trustDomain", "defaultAction", "operations"])
            // Dapr refuses to start without these three; the trust domain has no default despite its docs.
            let appId = try entry.requiredString("appId")
            let namespace = try entry.requiredString("namespace")
            let trustDomain = try entry.requiredString("trustDomain")
            var policy = Policy(
                appId: appId, namespace: namespace, trustDomain: trustDomain,
                defaultAction: try entry.string("defaultAction").flatMap { $0.isEmpty ? nil : $0 })
            for (position, item) in try entry.list("operations").enumerated() {
                let operation = try YAMLMapping(
                    path: node.path, field: entry.fieldPath("operations[\(position)]"), value: item)
                try operation.rejectUnknownKeys(["name", "httpVerb", "action"])
                policy.operations.append(
                    Operation(
                        name: try operation.requiredString("name"), httpVerbs: try operation.stringList("httpVerb"),
                        action: try operation.string("action") ?? ""))
            }
            policies.append(policy)
        }
        self.policies = policies
    }
}
