/// Why a component could not be initialised (shown in its health and to callers).
public struct ComponentInitError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
