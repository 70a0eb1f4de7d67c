import Foundation
import Yams

/// A parsed YAML mapping that reports every type mismatch with the file and the dotted field path.
struct YAMLMapping {
    let path: String
    let field: String
    let values: [String: Any]

    init(path: String, field: String, value: Any?) throws(ConfigurationError) {
        guard let dictionary = value as? [String: Any] else {
            throw ConfigurationError(path: path, field: field, message: "must be a mapping")
        }
        self.path = path
        self.field = field
        self.values = dictionary
    }

    func fieldPath(_ key: String) -> String { field.isEmpty ? key : "\(field).\(key)" }

    func error(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(path: path, field: fieldPath(key), message: message)
    }

    func has(_ key: String) -> Bool { values[key] != nil && !(values[key] is NSNull) }

    func string(_ key: String) throws(ConfigurationError) -> String? {
        guard has(key) else { return nil }
        switch values[key] {
        case let string as String: return string
        case let int as Int: return String(int)
        case let bool as Bool: return String(bool)
        case let double as Double: return String(double)
        default: throw error(key, "must be a string")
        }
    }

    func requiredString(_ key: String) throws(ConfigurationError) -> String {
        guard let value = try string(key), !value.isEmpty else { throw error(key, "is required") }
        return value
    }

    func int(_ key: String) throws(ConfigurationError) -> Int? {
        guard has(key) else { return nil }
        if let int = values[key] as? Int { return int }
        if let string = values[key] as? String, let int = Int(string) { return int }
        throw error(key, "must be an integer")
    }

    func mapping(_ key: String) throws(ConfigurationError) -> YAMLMapping? {
        guard has(key) else { return nil }
        return try YAMLMapping(path: path, field: fieldPath(key), value: values[key])
    }

    func list(_ key: String) throws(ConfigurationError) -> [Any] {
        guard has(key) else { return [] }
        guard let list = values[key] as? [Any] else { throw error(key, "must be a list") }
        return list
    }

    func stringList(_ key: String) throws(ConfigurationError) -> [String] {
        try list(key).enumerated().map { (index, item) throws(ConfigurationError) in
            if let string = item as? String { return string }
            if let int = item as? Int { return String(int) }
            throw error("\(key)[\(index)]", "must be a string")
        }
    }

    func intList(_ key: String) throws(ConfigurationError) -> [Int] {
        try list(key).enumerated().map { (index, item) throws(ConfigurationError) in
            guard let int = item as? Int else { throw error("\(key)[\(index)]", "must be an integer") }
            return int
        }
    }

    /// Refuses keys outside `allowed`, so that a misspelt field is an error rather than silently ignored.
    func rejectUnknownKeys(_ allowed: Set<String>) throws(ConfigurationError) {
        for key in values.keys.sorted() where !allowed.contains(key) {
            throw error(key, "unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
        }
    }
}

/// Reading the YAML files of a configuration directory.
enum YAMLFiles {
    /// The `.yaml`/`.yml` files directly inside `directory`, sorted by name.
    static func list(in directory: String) throws(ConfigurationError) -> [String] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ConfigurationError(path: directory, field: "", message: "is not a directory")
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw ConfigurationError(path: directory, field: "", message: "cannot be read: \(error)")
        }
        return names.filter { ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml")) && !$0.hasPrefix(".") }.sorted()
            .map { (directory as NSString).appendingPathComponent($0) }
    }

    /// Every document of a file, each a mapping (empty documents are skipped).
    static func documents(at path: String) throws(ConfigurationError) -> [YAMLMapping] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(path: path, field: "", message: "cannot be read as UTF-8 text: \(error)")
        }
        var documents: [YAMLMapping] = []
        do {
            // Parse document by document with errors surfaced: `Yams.load_all`'s lazy sequence drops a document
            // that fails to parse, which would make a broken file look empty.
            let parser = try Parser(yaml: text)
            var index = 0
            while let root = try parser.nextRoot() {
                defer { index += 1 }
                if let key = nonScalarKey(in: root) {
                    let line = key.mark.map { " (line \($0.line))" } ?? ""
                    throw ConfigurationError(
                        path: path, field: "", message: "invalid YAML: a mapping key is not a scalar\(line)")
                }
                let document = Constructor.default.any(from: root)
                if document is NSNull { continue }
                documents.append(
                    try YAMLMapping(path: path, field: index == 0 ? "" : "document[\(index)]", value: document))
            }
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError(path: path, field: "", message: "invalid YAML: \(error)")
        }
        return documents
    }

    /// The first mapping key that is a mapping or a sequence (`{a: 1}: x`, `? [a]`): Yams's constructor traps on one
    /// (it converts every key to a String), so such a file is refused before it is constructed.
    static func nonScalarKey(in node: Node) -> Node? {
        switch node {
        case .scalar, .alias:
            return nil
        case .sequence(let sequence):
            for item in sequence { if let key = nonScalarKey(in: item) { return key } }
            return nil
        case .mapping(let mapping):
            for (key, value) in mapping {
                guard case .scalar = key else { return key }
                if let found = nonScalarKey(in: value) { return found }
            }
            return nil
        }
    }
}
