/// An invalid configuration file: where it is, which field, and what is wrong with it.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    public let path: String
    public let field: String
    public let message: String

    public init(path: String, field: String, message: String) {
        self.path = path
        self.field = field
        self.message = message
    }

    public var description: String {
        field.isEmpty ? "\(path): \(message)" : "\(path): \(field): \(message)"
    }
}
