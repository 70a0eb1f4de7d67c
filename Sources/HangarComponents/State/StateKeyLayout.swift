/// How a state store on a shared backend (Redis, PostgreSQL) forms the key it stores from the physical key the
/// runtime hands it (`<namespace>||<appId>||<key>` with the default `keyPrefix`): the component metadata field
/// `keyLayout`.
///
/// - `hangar` (the default): the physical key as it is, so tenants sharing one component never share a key.
/// - `dapr`: Dapr's own key, `<appId>||<key>`: the physical key without its first part (the namespace). Only for a
///   component that belongs to one namespace (`metadata.namespace` set; the runtime refuses it otherwise), where
///   the namespace is fixed by the component and dropping it loses nothing; an existing Dapr deployment's data is
///   then read and written in place.
package enum StateKeyLayout: String, Sendable, Hashable {
    case hangar
    case dapr

    /// The metadata field that chooses it.
    package static let metadataName = "keyLayout"

    /// The layout a component's metadata asks for (`hangar` when unset); an unknown value is refused.
    package init(metadata: [String: String]) throws(ComponentDefinitionError) {
        guard let text = metadata[Self.metadataName], !text.isEmpty else {
            self = .hangar
            return
        }
        guard let layout = StateKeyLayout(rawValue: text.lowercased()) else {
            throw .metadata(Self.metadataName, "must be 'hangar' or 'dapr', not '\(text)'")
        }
        self = layout
    }

    /// The key stored in the backend for a physical key.
    package func backendKey(_ physicalKey: String) -> String {
        switch self {
        case .hangar: return physicalKey
        case .dapr:
            guard let range = physicalKey.range(of: StatePartition.separator) else { return physicalKey }
            return String(physicalKey[range.upperBound...])
        }
    }
}
