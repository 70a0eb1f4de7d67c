/// The component types this build can create, by `spec.type`. Filled at start-up by each backend target
/// (`HangarComponents.register(into:)`, `HangarSQLite.register(into:)`) and handed to the runtime, which checks
/// configuration against it and creates components from its descriptors.
package struct ComponentRegistry: Sendable {
    private var descriptors: [String: ComponentDescriptor] = [:]

    /// Metadata the component pool reads for every component: `maxConcurrentOperations`, the fair queue's
    /// capacity (ignored by types that execute inline, which have no queue).
    package static let poolMetadata = [ComponentMetadataField("maxConcurrentOperations")]

    package init() {}

    /// Adds a type; a later registration of the same type replaces the earlier one.
    package mutating func register(_ descriptor: ComponentDescriptor) {
        descriptors[descriptor.type] = descriptor
    }

    /// Every registered type, sorted.
    package var types: [String] { descriptors.keys.sorted() }

    /// The descriptor of a type, nil when this build does not have it.
    package func descriptor(for type: String) -> ComponentDescriptor? { descriptors[type] }

    /// Checks a definition against its type's descriptor: the type is registered, the version accepted and every
    /// required metadata name given. Values are the factory's to judge. Names the type does not know are not
    /// refused (Dapr ignores them, so YAML written for Dapr keeps working): `unknownMetadata` lists them for a
    /// warning.
    package func check(_ definition: ComponentDefinition) throws(ComponentDefinitionError) -> ComponentDescriptor {
        guard let descriptor = descriptors[definition.type] else {
            throw ComponentDefinitionError(
                field: "spec.type",
                message: "component type '\(definition.type)' is not supported (supported: "
                    + "\(types.joined(separator: ", ")))")
        }
        guard descriptor.versions.contains(definition.version) else {
            throw ComponentDefinitionError(
                field: "spec.version",
                message: "\(definition.type) has no version '\(definition.version)' (accepted: "
                    + "\(descriptor.versions.sorted().joined(separator: ", ")))")
        }
        for field in descriptor.acceptedMetadata where field.required && (definition.metadata[field.name] ?? "").isEmpty {
            throw .metadata(field.name, "is required by \(definition.type)")
        }
        return descriptor
    }

    /// The metadata names of `definition` that its type does not know (a typo, or a Dapr field this build does not
    /// implement), sorted; empty for an unregistered type.
    package func unknownMetadata(_ definition: ComponentDefinition) -> [String] {
        guard let descriptor = descriptors[definition.type] else { return [] }
        let known = Set(descriptor.acceptedMetadata.map(\.name))
        return definition.metadata.keys.filter { !known.contains($0) }.sorted()
    }
}
