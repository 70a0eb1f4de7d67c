/// What a component's factory reads of its `Component` resource: the runtime's `ComponentSpec` without what only
/// the runtime uses (namespace, scopes, the file it came from).
package struct ComponentDefinition: Sendable, Hashable {
    package var name: String
    /// `spec.type`, e.g. `state.sqlite`.
    package var type: String
    package var version: String
    package var metadata: [String: String]

    package init(name: String, type: String, version: String = "v1", metadata: [String: String] = [:]) {
        self.name = name
        self.type = type
        self.version = version
        self.metadata = metadata
    }
}
