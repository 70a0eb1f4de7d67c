/// One `spec.metadata` name a component type understands, and whether a component of that type must give it.
package struct ComponentMetadataField: Sendable, Hashable {
    package let name: String
    package let required: Bool

    package init(_ name: String, required: Bool = false) {
        self.name = name
        self.required = required
    }
}
