/// A component definition the registry or a factory refuses: the field of the resource (`spec.type`,
/// `spec.metadata.tableName`) and what is wrong with it. The runtime adds the file it came from.
public struct ComponentDefinitionError: Error, Sendable, Hashable, CustomStringConvertible {
    public let field: String
    public let message: String

    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    /// An error about the value of one `spec.metadata` entry.
    public static func metadata(_ name: String, _ message: String) -> Self {
        Self(field: "spec.metadata.\(name)", message: message)
    }

    public var description: String { "\(field): \(message)" }
}
