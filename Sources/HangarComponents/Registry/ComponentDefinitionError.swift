/// A component definition the registry or a factory refuses: the field of the resource (`spec.type`,
/// `spec.metadata.tableName`) and what is wrong with it. The runtime adds the file it came from.
package struct ComponentDefinitionError: Error, Sendable, Hashable, CustomStringConvertible {
    package let field: String
    package let message: String

    package init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    /// An error about the value of one `spec.metadata` entry.
    package static func metadata(_ name: String, _ message: String) -> Self {
        Self(field: "spec.metadata.\(name)", message: message)
    }

    package var description: String { "\(field): \(message)" }
}
