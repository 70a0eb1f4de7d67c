/// What a secret store can do beyond one value per secret, as Dapr's components-contrib `secretstores.Feature`.
package struct SecretStoreFeatures: OptionSet, Sendable, Hashable {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A secret may hold several keys (`secretstores.local.file` with `multiValued`, a directory per secret).
    package static let multipleKeyValuesPerSecret = SecretStoreFeatures(rawValue: 1 << 0)

    /// The names Dapr reports in `GetMetadata` for these features.
    package var daprNames: [String] {
        contains(.multipleKeyValuesPerSecret) ? ["MULTIPLE_KEY_VALUES_PER_SECRET"] : []
    }
}

/// Why a secret store could not answer. A message never holds a secret's value: it reaches callers, logs and health.
package enum SecretStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The store has no secret of that name.
    case notFound(String)
    /// The store cannot read its source now.
    case backend(String)

    package var description: String {
        switch self {
        case .notFound(let name): "secret \(name) not found"
        case .backend(let message): message
        }
    }
}

/// A secret store, as Dapr's components-contrib `secretstores.SecretStore`: a secret is a name with one or more
/// key/value pairs. Stores here answer from memory (what they read when they opened), synchronously; one that
/// reads files tells the node which files, and whether they changed, so that the node can reopen it and re-resolve
/// the `secretKeyRef`s that use it.
///
/// The request `metadata` is Dapr's pass-through for store-specific options (`namespace`, `version_id`, ...); the
/// local stores ignore it, as Dapr's do.
package protocol SecretStore: Sendable {
    var features: SecretStoreFeatures { get }

    /// One secret's key/value pairs.
    func secret(_ name: String, metadata: [String: String]) throws(SecretStoreError) -> [String: String]

    /// Every secret of the store, by name.
    func bulkSecrets(metadata: [String: String]) throws(SecretStoreError) -> [String: [String: String]]

    /// Whether what the store serves differs from its source now (its file was rewritten, a mounted Secret was
    /// swapped): the node then replaces it with a fresh instance. Blocking I/O; called on reconfiguration only.
    func sourceChanged() -> Bool
}

extension SecretStore {
    package var features: SecretStoreFeatures { [] }
    package func sourceChanged() -> Bool { false }
}
