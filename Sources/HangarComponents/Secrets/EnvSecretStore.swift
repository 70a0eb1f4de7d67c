/// `secretstores.local.env`: secrets from the environment of `hangard` itself, as Dapr's env store reads daprd's.
///
/// A secret is `{name: value}` of the variable `<prefix><name>` (case-sensitive), an empty value when it is not
/// set (Dapr answers so rather than failing). Bulk gives every variable that starts with `prefix` (and is longer
/// than it), under its name without the prefix. As in Dapr, `APP_API_TOKEN` and every `DAPR_*` variable are never
/// given; Hangar also keeps its own `HANGAR_*` settings back.
///
/// The variables are read when the store opens (a process's environment does not change afterwards). Every tenant
/// shares the daemon's environment, so a namespaced env store should always set `prefix`.
package struct EnvSecretStore: SecretStore {
    package let prefix: String
    /// The variables this store may give, by their full name.
    private let variables: [String: String]

    package init(prefix: String, environment: [String: String]) {
        self.prefix = prefix
        self.variables = environment.filter { Self.isAllowed($0.key) }
    }

    /// Dapr's deny-list (`APP_API_TOKEN`, `DAPR_*`) and Hangar's own settings (`HANGAR_*`), compared upper-cased.
    static func isAllowed(_ variable: String) -> Bool {
        let name = variable.uppercased()
        return name != "APP_API_TOKEN" && !name.hasPrefix("DAPR_") && !name.hasPrefix("HANGAR_")
    }

    package func secret(_ name: String, metadata: [String: String]) throws(SecretStoreError) -> [String: String] {
        [name: variables[prefix + name] ?? ""]
    }

    package func bulkSecrets(metadata: [String: String]) throws(SecretStoreError) -> [String: [String: String]] {
        var secrets: [String: [String: String]] = [:]
        for (variable, value) in variables where variable.count > prefix.count && variable.hasPrefix(prefix) {
            let name = String(variable.dropFirst(prefix.count))
            secrets[name] = [name: value]
        }
        return secrets
    }
}
