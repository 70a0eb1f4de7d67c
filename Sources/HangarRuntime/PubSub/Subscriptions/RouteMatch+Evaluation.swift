import Foundation

/// A value during evaluation: the CloudEvent's JSON values (numbers are doubles, as in Go) and the literals.
enum RouteMatchValue {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case list([GoJSON])
    case map([String: GoJSON])

    /// A value of the decoded CloudEvent. A number is the float64 Dapr's decoder makes of it.
    init(_ value: GoJSON) throws(RouteMatchProblem) {
        switch value {
        case .null: self = .null
        case .bool(let bool): self = .bool(bool)
        case .string(let string): self = .string(string)
        case .array(let list): self = .list(list)
        case .object(let map): self = .map(map)
        case .number(let literal):
            guard let double = GoJSON.float64(literal) else {
                throw RouteMatchProblem("the number \(literal) is out of range of a double")
            }
            self = .double(double)
        }
    }

    init(_ literal: RouteMatchLiteral) {
        switch literal {
        case .null: self = .null
        case .bool(let value): self = .bool(value)
        case .int(let value): self = .int(value)
        case .double(let value): self = .double(value)
        case .string(let value): self = .string(value)
        }
    }

    /// CEL's name of the value's type, for messages.
    var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "bool"
        case .int: "int"
        case .double: "double"
        case .string: "string"
        case .list: "list"
        case .map: "map"
        }
    }

    var number: Double? {
        switch self {
        case .int(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }
}

extension RouteMatchNode {
    func evaluate(_ event: [String: GoJSON]) throws(RouteMatchProblem) -> RouteMatchValue {
        switch self {
        case .event:
            return .map(event)
        case .literal(let literal):
            return RouteMatchValue(literal)
        case .select(let base, let field):
            guard case .map(let map) = try base.evaluate(event) else {
                throw RouteMatchProblem("no such key: '\(field)' (selected from \(try base.evaluate(event).typeName))")
            }
            guard let value = map[field] else { throw RouteMatchProblem("no such key: '\(field)'") }
            return try RouteMatchValue(value)
        case .index(let base, let index):
            switch (try base.evaluate(event), try index.evaluate(event)) {
            case (.map(let map), .string(let key)):
                guard let value = map[key] else { throw RouteMatchProblem("no such key: '\(key)'") }
                return try RouteMatchValue(value)
            case (.list(let list), let position):
                guard let number = position.number, number == number.rounded(), number >= 0,
                    number < Double(list.count)
                else { throw RouteMatchProblem("index out of range or not an integer: \(position)") }
                return try RouteMatchValue(list[Int(number)])
            case (let base, let position):
                throw RouteMatchProblem("cannot index a \(base.typeName) with a \(position.typeName)")
            }
        case .has(let base, let field):
            guard case .map(let map) = try base.evaluate(event) else {
                throw RouteMatchProblem("has(): '\(field)' is selected from a value that is not an object")
            }
            return .bool(map[field] != nil)
        case .not(let operand):
            guard case .bool(let value) = try operand.evaluate(event) else {
                throw RouteMatchProblem("no such overload: !\(try operand.evaluate(event).typeName)")
            }
            return .bool(!value)
        case .negate(let operand):
            switch try operand.evaluate(event) {
            case .int(let value) where value != .min: return .int(-value)
            case .double(let value): return .double(-value)
            case let other: throw RouteMatchProblem("no such overload: -\(other.typeName)")
            }
        case .and(let operands):
            return .bool(try Self.logical(operands, event, deciding: false))
        case .or(let operands):
            return .bool(try Self.logical(operands, event, deciding: true))
        case .compare(let comparison, let left, let right):
            return .bool(try Self.compare(comparison, try left.evaluate(event), try right.evaluate(event)))
        case .call(let function, let arguments):
            var values: [RouteMatchValue] = []
            for argument in arguments { values.append(try argument.evaluate(event)) }
            return try Self.call(function, values)
        }
    }

    /// `&&` (deciding value false) and `||` (true) as CEL has them: commutative, so an operand that decides the
    /// result wins over an error or a non-boolean in another operand; otherwise the first error is thrown.
    private static func logical(_ operands: [RouteMatchNode], _ event: [String: GoJSON], deciding: Bool)
        throws(RouteMatchProblem) -> Bool
    {
        var problem: RouteMatchProblem?
        for operand in operands {
            do {
                switch try operand.evaluate(event) {
                case .bool(let value):
                    if value == deciding { return deciding }
                case let other:
                    problem =
                        problem ?? RouteMatchProblem("no such overload: \(deciding ? "||" : "&&") on \(other.typeName)")
                }
            } catch {
                problem = problem ?? error
            }
        }
        if let problem { throw problem }
        return !deciding
    }

    private static func compare(_ comparison: RouteMatchComparison, _ left: RouteMatchValue, _ right: RouteMatchValue)
        throws(RouteMatchProblem) -> Bool
    {
        switch comparison {
        case .equal: return equal(left, right)
        case .notEqual: return !equal(left, right)
        default: break
        }
        let order: Int
        switch (left, right) {
        case (.int(let a), .int(let b)): order = a < b ? -1 : (a == b ? 0 : 1)
        case (.string(let a), .string(let b)):
            // By code point, as CEL (and Go's string comparison of UTF-8) orders strings.
            order = a.utf8.lexicographicallyPrecedes(b.utf8) ? -1 : (a == b ? 0 : 1)
        case (.bool(let a), .bool(let b)): order = a == b ? 0 : (a ? 1 : -1)
        default:
            guard let a = left.number, let b = right.number, !a.isNaN, !b.isNaN else {
                if let a = left.number, let b = right.number, a.isNaN || b.isNaN { return false }
                throw RouteMatchProblem(
                    "no such overload: \(left.typeName) \(comparison.rawValue) \(right.typeName)")
            }
            order = a < b ? -1 : (a == b ? 0 : 1)
        }
        switch comparison {
        case .less: return order < 0
        case .lessOrEqual: return order <= 0
        case .greater: return order > 0
        default: return order >= 0
        }
    }

    /// CEL's heterogeneous equality: numbers across int and double, lists and maps deeply, different types never.
    private static func equal(_ left: RouteMatchValue, _ right: RouteMatchValue) -> Bool {
        switch (left, right) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.int(let a), .int(let b)): return a == b
        case (.list(let a), .list(let b)):
            guard a.count == b.count else { return false }
            for (x, y) in zip(a, b) {
                guard let x = try? RouteMatchValue(x), let y = try? RouteMatchValue(y), equal(x, y) else {
                    return false
                }
            }
            return true
        case (.map(let a), .map(let b)):
            guard a.count == b.count else { return false }
            for (key, x) in a {
                guard let y = b[key], let x = try? RouteMatchValue(x), let y = try? RouteMatchValue(y), equal(x, y)
                else { return false }
            }
            return true
        default:
            guard let a = left.number, let b = right.number else { return false }
            return a == b
        }
    }

    private static func call(_ function: RouteMatchFunction, _ arguments: [RouteMatchValue])
        throws(RouteMatchProblem) -> RouteMatchValue
    {
        let argument = arguments[0]
        switch (function, argument) {
        case (.int, .int): return argument
        case (.int, .double(let value)):
            // Truncated toward zero; out of int64's range is an error, as in CEL.
            guard value.isFinite, value > -9.223372036854775808e18, value < 9.223372036854775807e18 else {
                throw RouteMatchProblem("int(): \(value) is out of range")
            }
            return .int(Int64(value))
        case (.int, .string(let text)):
            guard let value = Int64(text) else { throw RouteMatchProblem("int(): '\(text)' is not an integer") }
            return .int(value)
        case (.double, .int(let value)): return .double(Double(value))
        case (.double, .double): return argument
        case (.double, .string(let text)):
            guard let value = Double(text) else { throw RouteMatchProblem("double(): '\(text)' is not a number") }
            return .double(value)
        case (.string, .string): return argument
        case (.string, .int(let value)): return .string(String(value))
        case (.string, .double(let value)):
            // Go's FormatFloat(v, 'g', -1, 64) for the values routes meet: integral ones without a fraction.
            if value == value.rounded(), abs(value) < 1e21 { return .string(String(Int64(value))) }
            return .string("\(value)")
        case (.string, .bool(let value)): return .string(value ? "true" : "false")
        case (.size, .string(let text)): return .int(Int64(text.unicodeScalars.count))
        case (.size, .list(let list)): return .int(Int64(list.count))
        case (.size, .map(let map)): return .int(Int64(map.count))
        case (.startsWith, .string(let text)), (.endsWith, .string(let text)), (.contains, .string(let text)):
            guard case .string(let other) = arguments[1] else {
                throw RouteMatchProblem("no such overload: \(function.rawValue)(\(arguments[1].typeName))")
            }
            switch function {
            case .startsWith: return .bool(text.utf8.starts(with: other.utf8))
            case .endsWith: return .bool(text.utf8.reversed().starts(with: other.utf8.reversed()))
            default: return .bool(other.isEmpty || text.contains(other))
            }
        default:
            throw RouteMatchProblem("no such overload: \(function.rawValue)(\(argument.typeName))")
        }
    }
}
