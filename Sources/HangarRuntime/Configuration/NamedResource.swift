/// A resource of `--resources` that is identified by its `metadata.name` and optional `metadata.namespace`, and
/// that is kept, invalid, with its error rather than rejecting the whole configuration (`Configuration`,
/// `Subscription`).
protocol NamedResource {
    /// The resource's kind, as its `kind` field says it.
    static var kind: String { get }
    var name: String { get }
    var namespace: String? { get }
    var source: String { get }
    var error: ConfigurationError? { get set }
    /// Makes the resource unusable (its error is set): it applies to nothing.
    mutating func invalidate(_ error: ConfigurationError)
}

extension NamedResource {
    /// What identifies the resource on the node: `namespace/name`, `*/name` for a node-wide one.
    package var key: String { "\(namespace ?? "*")/\(name)" }

    /// Reads `metadata.name` (required) and `metadata.namespace` (empty: none), both DNS-1123 labels.
    static func identity(of document: YAMLMapping) throws(ConfigurationError) -> (name: String, namespace: String?) {
        guard let metadata = try document.mapping("metadata") else {
            throw document.error("metadata", "is required")
        }
        let name = try metadata.requiredString("name")
        if let problem = Names.dns1123Problem(name) { throw metadata.error("name", problem) }
        let namespace = try metadata.string("namespace").flatMap { $0.isEmpty ? nil : $0 }
        if let namespace, let problem = Names.dns1123Problem(namespace) {
            throw metadata.error("namespace", problem)
        }
        return (name, namespace)
    }

    /// A resource declared twice (same name and namespace) is unusable from its second declaration on.
    static func markDuplicates(_ resources: [Self]) -> [Self] {
        var seen: [String: String] = [:]
        return resources.map { resource in
            var resource = resource
            guard resource.error == nil else { return resource }
            if let other = seen[resource.key] {
                resource.invalidate(
                    ConfigurationError(
                        path: resource.source, field: "metadata.name",
                        message: "\(kind) '\(resource.key)' is also declared in \(other)"))
            } else {
                seen[resource.key] = resource.source
            }
            return resource
        }
    }
}
