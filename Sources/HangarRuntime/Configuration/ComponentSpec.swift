import Foundation
package import HangarComponents

/// A Dapr `Component` resource (`dapr.io/v1alpha1`) as users already write it.
public struct ComponentSpec: Sendable, Hashable {
    package var name: String
    /// nil: shared by every tenant; otherwise visible only to that tenant.
    package var namespace: String?
    /// `spec.type`, e.g. `state.sqlite`.
    package var type: String
    package var version: String
    package var metadata: [String: String]
    /// App ids allowed to use the component; empty means every app of the namespace(s) it is visible to.
    package var scopes: [String]
    /// The file it came from, for error messages.
    package var source: String
    /// Metadata values given by `secretKeyRef`, by metadata name: read from a secret store when the component is
    /// created (`ComponentHost`), and never kept here, so that a spec can be shown and logged.
    package var secretRefs: [String: SecretKeyRef] = [:]
    /// `auth.secretStore`: the secret store `secretRefs` read from, in the component's own namespace (or node-wide
    /// for a node-wide component); nil: `defaultSecretStore`.
    package var secretStore: String?

    /// The secret store a component's `secretKeyRef`s read without `auth.secretStore`: `kubernetes`, as Dapr's on
    /// Kubernetes, so that a `secretstores.local.directory` of that name serves YAML written for Kubernetes.
    package static let defaultSecretStore = "kubernetes"

    package init(
        name: String, namespace: String? = nil, type: String, version: String = "v1",
        metadata: [String: String] = [:], scopes: [String] = [], source: String = "<embedded>",
        secretRefs: [String: SecretKeyRef] = [:], secretStore: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.type = type
        self.version = version
        self.metadata = metadata
        self.scopes = scopes
        self.source = source
        self.secretRefs = secretRefs
        self.secretStore = secretStore
    }

    /// Whether the app may use this component. A node-wide component of a block not shared with tenants (a secret
    /// store) is used by no app.
    package func isVisible(to app: AppID) -> Bool {
        if let namespace {
            if namespace != app.namespace { return false }
        } else if let block = BuildingBlock(type: type), !block.sharedWithTenants {
            return false
        }
        return scopes.isEmpty || scopes.contains(app.appId)
    }

    /// What the component's factory reads of it, without the values of `secretRefs` (the component host adds them).
    package var definition: ComponentDefinition {
        ComponentDefinition(name: name, type: type, version: version, metadata: metadata)
    }

    /// The definition as declared, for checking metadata names: a `secretKeyRef`'d name is there, with a
    /// placeholder for its value.
    package var declaredDefinition: ComponentDefinition {
        var definition = definition
        for name in secretRefs.keys { definition.metadata[name] = "<secretKeyRef>" }
        return definition
    }

    /// The key that identifies this component's live instance on the node.
    package var poolKey: String { "\(namespace ?? "*")/\(name)" }

    init(document: YAMLMapping, environment: [String: String]) throws(ConfigurationError) {
        let metadataNode = try document.mapping("metadata")
        guard let metadataNode else { throw document.error("metadata", "is required") }
        name = try metadataNode.requiredString("name")
        if let problem = Names.dns1123Problem(name) { throw metadataNode.error("name", problem) }
        namespace = try metadataNode.string("namespace").flatMap { $0.isEmpty ? nil : $0 }
        if let namespace, let problem = Names.dns1123Problem(namespace) {
            throw metadataNode.error("namespace", problem)
        }
        guard let spec = try document.mapping("spec") else { throw document.error("spec", "is required") }
        type = try spec.requiredString("type")
        version = try spec.string("version") ?? "v1"
        var metadata: [String: String] = [:]
        var references: [String: SecretKeyRef] = [:]
        for (index, item) in try spec.list("metadata").enumerated() {
            let entry = try YAMLMapping(path: document.path, field: spec.fieldPath("metadata[\(index)]"), value: item)
            let key = try entry.requiredString("name")
            if let reference = try entry.mapping("secretKeyRef") {
                let secret = try reference.requiredString("name")
                let secretKey = try reference.string("key").flatMap { $0.isEmpty ? nil : $0 }
                // Dapr reads the key named like the secret when `key` is not given.
                references[key] = SecretKeyRef(name: secret, key: secretKey ?? secret)
            } else if let variable = try entry.string("envRef") {
                guard let value = environment[variable] else {
                    throw entry.error("envRef", "environment variable '\(variable)' is not set")
                }
                metadata[key] = value
            } else {
                metadata[key] = try entry.string("value") ?? ""
            }
        }
        self.metadata = metadata
        secretRefs = references
        let store = try document.mapping("auth")?.string("secretStore").flatMap { $0.isEmpty ? nil : $0 }
        if let store, let problem = Names.dns1123Problem(store) { throw document.error("auth.secretStore", problem) }
        secretStore = store
        scopes = try document.stringList("scopes")
        for (index, scope) in scopes.enumerated() {
            if let problem = Names.dns1123Problem(scope) { throw document.error("scopes[\(index)]", problem) }
        }
        source = document.path
    }
}

/// A metadata value read from a secret store: Dapr's `secretKeyRef: {name, key}`.
package struct SecretKeyRef: Sendable, Hashable {
    /// The secret's name in its store.
    package var name: String
    /// The key within the secret (the secret's name when the resource does not give one, as in Dapr).
    package var key: String

    package init(name: String, key: String) {
        self.name = name
        self.key = key
    }
}

extension ComponentSpec {
    /// Whether a live instance of `self` can keep serving `other`: the same component, configured the same way
    /// (the file it came from may differ).
    func sameInstance(as other: ComponentSpec) -> Bool {
        var other = other
        other.source = source
        return self == other
    }
}
