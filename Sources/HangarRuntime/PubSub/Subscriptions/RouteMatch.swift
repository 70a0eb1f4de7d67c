/// A routing rule's `match` expression (reference §3.6), compiled when its subscription loads.
///
/// Placeholder until the expression subset is built: every expression is refused at load with a clear error.
package struct RouteMatch: Sendable, Hashable {
    /// The expression as written.
    package let expression: String

    /// Compiles `expression`; throws with a message naming what is not supported.
    package init(_ expression: String) throws(RouteMatchError) {
        self.expression = expression
        throw RouteMatchError(expression: expression, message: "routing rules are not supported yet")
    }

    /// Whether the rule holds for `event`, the CloudEvent as a JSON object (Foundation values, as
    /// `JSONSerialization` reads it). Throws when the expression cannot be evaluated on this event (a field of a
    /// non-object, a result that is not a boolean): Dapr then retries the message or dead-letters it.
    package func evaluate(_ event: [String: Any]) throws(RouteMatchError) -> Bool {
        throw RouteMatchError(expression: expression, message: "routing rules are not supported yet")
    }
}

/// Why a `match` expression cannot be compiled or evaluated.
package struct RouteMatchError: Error, Sendable, Hashable, CustomStringConvertible {
    package var expression: String
    package var message: String

    package init(expression: String, message: String) {
        self.expression = expression
        self.message = message
    }

    package var description: String { "match '\(expression)': \(message)" }
}
