/// Why a component could not be initialised (shown in its health and to callers).
package struct ComponentInitError: Error, CustomStringConvertible, Sendable {
    package let description: String

    package init(_ description: String) {
        self.description = description
    }
}
