/// A routing rule's `match` expression (reference §3.6), compiled when its subscription loads.
///
/// Dapr evaluates full CEL; Hangar compiles the subset Dapr's documentation and users' rules use, and refuses the
/// rest at load with a message naming what is not supported (the subscription is then invalid, as one whose CEL
/// does not compile in Dapr):
/// - `event.<field>(.<field>)*` and `event["field"]`, `list[index]`: only `event` is bound, to the CloudEvent;
/// - string (`"…"`, `'…'`), number, `true`/`false` and `null` literals;
/// - `==`, `!=` on any values (numbers compare across int and double, other types never equal each other);
///   `<`, `<=`, `>`, `>=` on numbers and on strings;
/// - `&&`, `||` (with CEL's absorption of an error by a deciding side), `!`, unary `-`, parentheses;
/// - `int(x)`, `double(x)`, `string(x)`, `size(x)`, `has(event.x.y)`, and `s.startsWith(t)`, `s.endsWith(t)`,
///   `s.contains(t)` on strings.
///
/// Numbers from the event are doubles, as JSON numbers are in Go (so `event.data.n == 3` holds for `3`, and
/// `int(event.data.amount) > 10000` works as in Dapr's docs). An expression is at most `maxLength` bytes and nests
/// at most `maxDepth` levels, so that a hostile one cannot exhaust the stack.
package struct RouteMatch: Sendable, Hashable {
    /// The expression as written.
    package let expression: String
    let root: RouteMatchNode

    /// The longest expression compiled, in UTF-8 bytes.
    package static let maxLength = 4096
    /// The deepest nesting of parentheses, operators and calls.
    package static let maxDepth = 32

    /// Compiles `expression`; throws with a message naming what is not supported. With `variables`, those bare
    /// identifiers are bound (each to the key of that name in the object `evaluate` is given) instead of `event`:
    /// a circuit breaker's `trip` reads its counts so.
    package init(_ expression: String, variables: Set<String> = []) throws(RouteMatchError) {
        self.expression = expression
        guard expression.utf8.count <= Self.maxLength else {
            throw RouteMatchError(
                expression: String(expression.prefix(64)) + "…",
                message: "the expression is \(expression.utf8.count) bytes long; at most \(Self.maxLength) are allowed")
        }
        var parser = RouteMatchParser(expression, variables: variables)
        do {
            root = try parser.parse()
        } catch {
            throw RouteMatchError(expression: expression, message: error.message)
        }
    }

    /// Whether the rule holds for `event`, the CloudEvent as a JSON object (as `SubscriptionEvent.cloudEvent`
    /// decodes it). Throws when the expression cannot be evaluated on this event (a field of a
    /// non-object, a result that is not a boolean): Dapr then retries the message or dead-letters it.
    package func evaluate(_ event: [String: GoJSON]) throws(RouteMatchError) -> Bool {
        do throws(RouteMatchProblem) {
            switch try root.evaluate(event) {
            case .bool(let result): return result
            case let other: throw RouteMatchProblem("the result is \(other.typeName), not a boolean")
            }
        } catch {
            throw RouteMatchError(expression: expression, message: error.message)
        }
    }

    package static func == (lhs: RouteMatch, rhs: RouteMatch) -> Bool { lhs.expression == rhs.expression }
    package func hash(into hasher: inout Hasher) { hasher.combine(expression) }
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

/// A compile or evaluation problem, before `RouteMatch` names the expression it is about.
struct RouteMatchProblem: Error {
    var message: String
    init(_ message: String) { self.message = message }
}
