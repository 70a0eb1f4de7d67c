import Foundation

/// `secretstores.local.file`: secrets from one JSON file, read when the store opens (Dapr's local file store, meant
/// for development, and for nodes whose secrets are provisioned as a file).
///
/// Without `multiValued`, every leaf of the JSON document is one secret named by its path, the parts joined with
/// `nestedSeparator` (default `:`; array elements by index): `{"db": {"password": "x"}}` holds `db:password`, whose
/// value is `{"db:password": "x"}`. With `multiValued: true`, each top-level key is one secret: a string is
/// `{name: value}`, an object its leaves flattened the same way; other top-level values are dropped, as in Dapr.
///
/// Leaves that are not strings are given as their JSON text (`5`, `true`; `null` as an empty string), where Dapr's
/// Go formatting would give `%!s(float64=5)`.
package struct LocalFileSecretStore: SecretStore {
    package struct Settings: Sendable, Hashable {
        package var secretsFile: String
        package var nestedSeparator = ":"
        package var multiValued = false

        package init(secretsFile: String, nestedSeparator: String = ":", multiValued: Bool = false) {
            self.secretsFile = secretsFile
            self.nestedSeparator = nestedSeparator
            self.multiValued = multiValued
        }
    }

    package let settings: Settings
    /// Every secret with its key/value pairs, as read when the store opened.
    private let secrets: [String: [String: String]]

    /// Reads and parses the file now.
    package init(settings: Settings) throws(SecretStoreError) {
        self.settings = settings
        self.secrets = try Self.read(settings)
    }

    package var features: SecretStoreFeatures { settings.multiValued ? .multipleKeyValuesPerSecret : [] }

    package func secret(_ name: String, metadata: [String: String]) throws(SecretStoreError) -> [String: String] {
        guard let secret = secrets[name] else { throw .notFound(name) }
        return secret
    }

    package func bulkSecrets(metadata: [String: String]) throws(SecretStoreError) -> [String: [String: String]] {
        secrets
    }

    package func sourceChanged() -> Bool {
        (try? Self.read(settings)) != secrets
    }

    /// The file's secrets. Errors name the file and what is wrong, never its content.
    static func read(_ settings: Settings) throws(SecretStoreError) -> [String: [String: String]] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: settings.secretsFile))
        } catch {
            throw .backend("cannot read secretsFile \(settings.secretsFile): \(Self.reason(error))")
        }
        let document: JSONLeaf
        do {
            document = try JSONDecoder().decode(JSONLeaf.self, from: data)
        } catch {
            throw .backend("secretsFile \(settings.secretsFile) is not valid JSON")
        }
        guard case .object(let top) = document else {
            throw .backend("secretsFile \(settings.secretsFile) must hold a JSON object")
        }
        var secrets: [String: [String: String]] = [:]
        if settings.multiValued {
            for (name, value) in top {
                switch value {
                case .string(let text): secrets[name] = [name: text]
                case .object(let object):
                    var pairs: [String: String] = [:]
                    JSONLeaf.object(object).flatten(into: &pairs, path: [], separator: settings.nestedSeparator)
                    secrets[name] = pairs
                default: continue
                }
            }
        } else {
            var leaves: [String: String] = [:]
            document.flatten(into: &leaves, path: [], separator: settings.nestedSeparator)
            for (name, value) in leaves { secrets[name] = [name: value] }
        }
        return secrets
    }

    /// A file error's reason without Foundation's long wording (which may repeat the path).
    static func reason(_ error: any Error) -> String {
        let code = (error as NSError).code
        switch code {
        case NSFileReadNoSuchFileError, NSFileNoSuchFileError: return "no such file"
        case NSFileReadNoPermissionError: return "permission denied"
        default: return "error \(code)"
        }
    }
}

/// A JSON value as the local file store reads it: leaves keep their text.
enum JSONLeaf: Decodable, Equatable {
    case text(String)
    case string(String)
    case array([JSONLeaf])
    case object([String: JSONLeaf])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .text("")
        } else if let value = try? container.decode(Bool.self) {
            self = .text(value ? "true" : "false")
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode(Int64.self) {
            self = .text(String(value))
        } else if let value = try? container.decode(Double.self) {
            self = .text(String(value))
        } else if let value = try? container.decode([JSONLeaf].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONLeaf].self))
        }
    }

    /// Every leaf under this value by its path joined with `separator`; the first of two equal paths wins (keys
    /// are visited in sorted order, so which one is stable).
    func flatten(into leaves: inout [String: String], path: [String], separator: String) {
        switch self {
        case .text(let value), .string(let value):
            let key = path.joined(separator: separator)
            if leaves[key] == nil { leaves[key] = value }
        case .array(let items):
            for (index, item) in items.enumerated() {
                item.flatten(into: &leaves, path: path + [String(index)], separator: separator)
            }
        case .object(let object):
            for key in object.keys.sorted() {
                object[key]?.flatten(into: &leaves, path: path + [key], separator: separator)
            }
        }
    }
}
