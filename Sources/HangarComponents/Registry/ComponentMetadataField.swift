/// One `spec.metadata` name a component type understands, and whether a component of that type must give it.
public struct ComponentMetadataField: Sendable, Hashable {
    public let name: String
    public let required: Bool

    public init(_ name: String, required: Bool = false) {
        self.name = name
        self.required = required
    }
}
