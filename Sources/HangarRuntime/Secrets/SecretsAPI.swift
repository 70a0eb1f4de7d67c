import HangarComponents

/// The secrets building block: `GetSecret` and `GetBulkSecret` with Dapr's semantics, written once for both
/// front-ends. The caller reaches only the secret stores of its own namespace (`ComponentHost.scoped`; node-wide
/// stores serve no app), and within them only what its Configuration's `spec.secrets.scopes` allows.
///
/// The local stores answer from memory, so the operations are synchronous and run on the caller's event loop.
package struct SecretsAPI: Sendable {
    package let components: ComponentHost
    /// Where each app's secret scopes are found; nil in tests that need none (everything allowed).
    package let registry: TenantRegistry?

    package init(components: ComponentHost, registry: TenantRegistry? = nil) {
        self.components = components
        self.registry = registry
    }

    private func handle(_ caller: Caller, _ store: String) throws(APIError) -> TenantSecretHandle {
        try components.scoped(TenantSecretHandle.self, named: store, for: caller, tenant: nil)
    }

    private func access(_ caller: Caller) -> AppSecretAccess {
        registry?.secretAccess(for: caller.app) ?? .unrestricted
    }

    /// `GetSecret`: the secret's key/value pairs. As Dapr, the store is checked first (not configured, not
    /// found), then the app's secret scopes, then the store is asked; `metadata` is passed to it.
    package func get(
        _ caller: Caller, store: String, name: String, metadata: [String: String]
    ) throws(APIError) -> [String: String] {
        let handle = try handle(caller, store)
        switch access(caller) {
        case .scopes(let scopes):
            guard scopes.allows(store: store, secret: name) else {
                throw SecretsAPIError.permissionDenied(name, store: store)
            }
        case .unusable(let reason):
            throw SecretsAPIError.permissionDenied(name, store: store, why: reason)
        }
        do {
            return try handle.store.secret(name, metadata: metadata)
        } catch {
            throw SecretsAPIError.get(name, store: store, error)
        }
    }

    /// `GetBulkSecret`: every secret of the store that the app's secret scopes allow (the others are left out, as
    /// in Dapr); refused whole when the app's Configuration cannot be used.
    package func bulkGet(
        _ caller: Caller, store: String, metadata: [String: String]
    ) throws(APIError) -> [String: [String: String]] {
        let handle = try handle(caller, store)
        let scopes: SecretScopes
        switch access(caller) {
        case .scopes(let granted): scopes = granted
        case .unusable(let reason): throw SecretsAPIError.permissionDenied("*", store: store, why: reason)
        }
        let secrets: [String: [String: String]]
        do {
            secrets = try handle.store.bulkSecrets(metadata: metadata)
        } catch {
            throw SecretsAPIError.bulkGet(store: store, error)
        }
        return secrets.filter { scopes.allows(store: store, secret: $0.key) }
    }
}
