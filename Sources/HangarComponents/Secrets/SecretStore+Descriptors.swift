import Foundation

extension LocalFileSecretStore {
    /// `secretstores.local.file`, with Dapr's metadata: `secretsFile` (required; a relative path is relative to
    /// hangard's working directory, as Dapr's is to daprd's), `nestedSeparator`, `multiValued`.
    package static let descriptor = ComponentDescriptor(
        type: "secretstores.local.file",
        metadata: [
            ComponentMetadataField("secretsFile", required: true), ComponentMetadataField("nestedSeparator"),
            ComponentMetadataField("multiValued"),
        ],
        executesInline: true,
        watchedPaths: { metadata in metadata["secretsFile"].map { [$0] } ?? [] },
        make: .secretstores { (definition, _) throws(ComponentDefinitionError) in
            let metadata = definition.metadata
            var settings = Settings(secretsFile: metadata["secretsFile"] ?? "")
            if let separator = metadata["nestedSeparator"], !separator.isEmpty { settings.nestedSeparator = separator }
            settings.multiValued = try SecretStoreMetadata.bool(metadata, "multiValued") ?? false
            let chosen = settings
            return { try LocalFileSecretStore(settings: chosen) }
        })
}

extension EnvSecretStore {
    /// `secretstores.local.env`, with Dapr's metadata: `prefix`.
    package static let descriptor = ComponentDescriptor(
        type: "secretstores.local.env", metadata: [ComponentMetadataField("prefix")], executesInline: true,
        make: .secretstores { definition, _ in
            let prefix = definition.metadata["prefix"] ?? ""
            return { EnvSecretStore(prefix: prefix, environment: ProcessInfo.processInfo.environment) }
        })
}

extension DirectorySecretStore {
    /// `secretstores.local.directory` (Hangar's): `secretsDirectory` (required), the directory to read.
    package static let descriptor = ComponentDescriptor(
        type: "secretstores.local.directory", metadata: [ComponentMetadataField("secretsDirectory", required: true)],
        executesInline: true,
        watchedPaths: { metadata in metadata["secretsDirectory"].map(DirectorySecretStore.watchedPaths) ?? [] },
        make: .secretstores { definition, _ in
            let directory = definition.metadata["secretsDirectory"] ?? ""
            return { try DirectorySecretStore(directory: directory) }
        })
}

/// Reading secret stores' metadata values.
enum SecretStoreMetadata {
    /// A boolean as Go's `strconv.ParseBool` reads it (Dapr decodes metadata so); nil when not given.
    static func bool(_ metadata: [String: String], _ name: String) throws(ComponentDefinitionError) -> Bool? {
        guard let text = metadata[name], !text.isEmpty else { return nil }
        switch text {
        case "1", "t", "T", "true", "TRUE", "True": return true
        case "0", "f", "F", "false", "FALSE", "False": return false
        default: throw .metadata(name, "must be true or false, not '\(text)'")
        }
    }
}
