/// What a component's factory reads of its `Component` resource: the runtime's `ComponentSpec` without what only
/// the runtime uses (namespace, scopes, the file it came from).
public struct ComponentDefinition: Sendable, Hashable {
    public var name: String
    /// `spec.type`, e.g. `state.sqlite`.
    public var type: String
    public var version: String
    public var metadata: [String: String]

    public init(name: String, type: String, version: String = "v1", metadata: [String: String] = [:]) {
        self.name = name
        self.type = type
        self.version = version
        self.metadata = metadata
    }
}
