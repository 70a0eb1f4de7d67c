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

    package init(
        name: String, namespace: String? = nil, type: String, version: String = "v1",
        metadata: [String: String] = [:], scopes: [String] = [], source: String = "<embedded>"
    ) {
        self.name = name
        self.namespace = namespace
        self.type = type
        self.version = version
        self.metadata = metadata
        self.scopes = scopes
        self.source = source
    }

    /// Whether the app may use this component.
    package func isVisible(to app: AppID) -> Bool {
        if let namespace, namespace != app.namespace { return false }
        return scopes.isEmpty || scopes.contains(app.appId)
    }

    /// What the component's factory reads of it.
    package var definition: ComponentDefinition {
        ComponentDefinition(name: name, type: type, version: version, metadata: metadata)
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
        for (index, item) in try spec.list("metadata").enumerated() {
            let entry = try YAMLMapping(path: document.path, field: spec.fieldPath("metadata[\(index)]"), value: item)
            let key = try entry.requiredString("name")
            if entry.has("secretKeyRef") {
                throw entry.error("secretKeyRef", "secret references are not supported yet; give the value inline")
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
        scopes = try document.stringList("scopes")
        for (index, scope) in scopes.enumerated() {
            if let problem = Names.dns1123Problem(scope) { throw document.error("scopes[\(index)]", problem) }
        }
        source = document.path
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
