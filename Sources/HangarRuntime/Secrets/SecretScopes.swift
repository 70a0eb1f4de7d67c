/// `spec.secrets` of a Dapr Configuration: which secrets of which store the apps that use it may read.
///
/// ```yaml
/// secrets:
///   scopes:
///     - storeName: vault          # required
///       defaultAccess: deny       # allow (default) | deny
///       allowedSecrets: [db]      # when given, exactly these, whatever defaultAccess says
///       deniedSecrets: [admin]    # else these are refused, the rest follow defaultAccess
/// ```
///
/// A store without a scope allows every secret, as in Dapr. Scopes apply to apps' `GetSecret` and
/// `GetBulkSecret` (bulk leaves out what is not allowed); they do not apply to components' `secretKeyRef`s, which
/// the node resolves from the component's own namespace.
package struct SecretScopes: Sendable, Hashable {
    /// One store's rules, as Dapr's `SecretsScope.IsSecretAllowed` applies them.
    package struct Scope: Sendable, Hashable {
        package var defaultAccessDenies: Bool
        package var allowedSecrets: Set<String>
        package var deniedSecrets: Set<String>

        package init(
            defaultAccessDenies: Bool = false, allowedSecrets: Set<String> = [], deniedSecrets: Set<String> = []
        ) {
            self.defaultAccessDenies = defaultAccessDenies
            self.allowedSecrets = allowedSecrets
            self.deniedSecrets = deniedSecrets
        }

        package func allows(_ secret: String) -> Bool {
            if !allowedSecrets.isEmpty { return allowedSecrets.contains(secret) }
            if deniedSecrets.contains(secret) { return false }
            return !defaultAccessDenies
        }
    }

    /// By store name; of two scopes for one store the later wins, as in Dapr.
    package var scopes: [String: Scope]

    package init(scopes: [String: Scope] = [:]) {
        self.scopes = scopes
    }

    package func allows(store: String, secret: String) -> Bool {
        scopes[store]?.allows(secret) ?? true
    }

    /// Reads `spec.secrets`.
    init(_ node: YAMLMapping) throws(ConfigurationError) {
        try node.rejectUnknownKeys(["scopes"])
        var scopes: [String: Scope] = [:]
        for (index, item) in try node.list("scopes").enumerated() {
            let entry = try YAMLMapping(path: node.path, field: node.fieldPath("scopes[\(index)]"), value: item)
            try entry.rejectUnknownKeys(["storeName", "defaultAccess", "allowedSecrets", "deniedSecrets"])
            let store = try entry.requiredString("storeName")
            let access = try entry.string("defaultAccess") ?? ""
            guard ["", "allow", "deny"].contains(access.lowercased()) else {
                throw entry.error("defaultAccess", "must be allow or deny, not '\(access)'")
            }
            scopes[store] = Scope(
                defaultAccessDenies: access.lowercased() == "deny",
                allowedSecrets: Set(try entry.stringList("allowedSecrets")),
                deniedSecrets: Set(try entry.stringList("deniedSecrets")))
        }
        self.scopes = scopes
    }
}

/// Which secrets one app may read: its Configuration's `spec.secrets` (`SecretScopes`), chosen as its access control
/// is (`AccessControlPolicies`), or nothing at all when that Configuration cannot be used.
package enum AppSecretAccess: Sendable, Hashable {
    case scopes(SecretScopes)
    /// The app's Configuration is invalid with no last good version, or cannot be found: every secret is refused
    /// (fail closed), with this reason.
    case unusable(String)

    package static let unrestricted = AppSecretAccess.scopes(SecretScopes())
}
