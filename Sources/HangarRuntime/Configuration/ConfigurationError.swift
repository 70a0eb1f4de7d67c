/// An invalid configuration file: where it is, which field, and what is wrong with it.
package struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    package let path: String
    package let field: String
    package let message: String

    package init(path: String, field: String, message: String) {
        self.path = path
        self.field = field
        self.message = message
    }

    package var description: String {
        field.isEmpty ? "\(path): \(message)" : "\(path): \(field): \(message)"
    }
}
