/// A compiled `match` expression: the tree `RouteMatchParser` builds and `evaluate` walks.
indirect enum RouteMatchNode: Sendable, Hashable {
    /// The bound variable `event`.
    case event
    case literal(RouteMatchLiteral)
    /// `base.name`
    case select(RouteMatchNode, String)
    /// `base[index]`
    case index(RouteMatchNode, RouteMatchNode)
    /// `has(base.name)`
    case has(RouteMatchNode, String)
    case not(RouteMatchNode)
    case negate(RouteMatchNode)
    case and([RouteMatchNode])
    case or([RouteMatchNode])
    case compare(RouteMatchComparison, RouteMatchNode, RouteMatchNode)
    /// A function (`int(x)`) or a method with its receiver first (`s.startsWith(t)`).
    case call(RouteMatchFunction, [RouteMatchNode])
}

/// A literal of the expression.
enum RouteMatchLiteral: Sendable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
}

enum RouteMatchComparison: String, Sendable, Hashable {
    case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
}

/// The functions and string methods of the subset.
enum RouteMatchFunction: String, Sendable, Hashable {
    case int, double, string, size
    case startsWith, endsWith, contains

    static let functions: [String: RouteMatchFunction] = [
        "int": .int, "double": .double, "string": .string, "size": .size,
    ]
    static let methods: [String: RouteMatchFunction] = [
        "startsWith": .startsWith, "endsWith": .endsWith, "contains": .contains,
    ]
}

/// A recursive-descent parser of the CEL subset `RouteMatch` documents, with CEL's precedence (`||` < `&&` <
/// relations < unary < member access). Every level of nesting counts against `RouteMatch.maxDepth`.
struct RouteMatchParser {
    enum Token: Equatable {
        case identifier(String)
        case int(Int64)
        case double(Double)
        case string(String)
        case symbol(String)
        case end
    }

    private let bytes: [UInt8]
    private var position = 0
    private var current = Token.end
    private var depth = 0
    /// The bare identifiers bound instead of `event` (a circuit breaker's `trip` sees its counts); empty: `event`.
    private let variables: Set<String>

    init(_ text: String, variables: Set<String> = []) {
        bytes = Array(text.utf8)
        self.variables = variables
    }

    mutating func parse() throws(RouteMatchProblem) -> RouteMatchNode {
        try advance()
        guard current != .end else { throw RouteMatchProblem("the expression is empty") }
        let node = try or()
        guard current == .end else { throw RouteMatchProblem("unexpected \(Self.describe(current))") }
        return node
    }

    // MARK: grammar

    private mutating func or() throws(RouteMatchProblem) -> RouteMatchNode {
        var operands = [try and()]
        while current == .symbol("||") {
            try advance()
            operands.append(try and())
        }
        return operands.count == 1 ? operands[0] : .or(operands)
    }

    private mutating func and() throws(RouteMatchProblem) -> RouteMatchNode {
        var operands = [try relation()]
        while current == .symbol("&&") {
            try advance()
            operands.append(try relation())
        }
        return operands.count == 1 ? operands[0] : .and(operands)
    }

    private mutating func relation() throws(RouteMatchProblem) -> RouteMatchNode {
        var left = try unary()
        let entered = depth
        defer { depth = entered }
        while case .symbol(let symbol) = current, let comparison = RouteMatchComparison(rawValue: symbol) {
            try enter()
            try advance()
            left = .compare(comparison, left, try unary())
        }
        return left
    }

    private mutating func unary() throws(RouteMatchProblem) -> RouteMatchNode {
        switch current {
        case .symbol("!"):
            try enter()
            defer { depth -= 1 }
            try advance()
            return .not(try unary())
        case .symbol("-"):
            try enter()
            defer { depth -= 1 }
            try advance()
            return .negate(try unary())
        default:
            return try member()
        }
    }

    private mutating func member() throws(RouteMatchProblem) -> RouteMatchNode {
        var node = try primary()
        let entered = depth
        defer { depth = entered }
        while true {
            switch current {
            case .symbol("."):
                try enter()
                try advance()
                guard case .identifier(let name) = current else {
                    throw RouteMatchProblem("expected a field name after '.', found \(Self.describe(current))")
                }
                try advance()
                if current == .symbol("(") {
                    guard let method = RouteMatchFunction.methods[name] else {
                        throw RouteMatchProblem("the method '\(name)' is not supported")
                    }
                    node = .call(method, [node] + (try arguments(of: name, count: 1)))
                } else {
                    node = .select(node, name)
                }
            case .symbol("["):
                try enter()
                try advance()
                let index = try or()
                try expect("]")
                node = .index(node, index)
            default:
                return node
            }
        }
    }

    private mutating func primary() throws(RouteMatchProblem) -> RouteMatchNode {
        let token = current
        switch token {
        case .int(let value):
            try advance()
            return .literal(.int(value))
        case .double(let value):
            try advance()
            return .literal(.double(value))
        case .string(let value):
            try advance()
            return .literal(.string(value))
        case .symbol("("):
            try enter()
            defer { depth -= 1 }
            try advance()
            let node = try or()
            try expect(")")
            return node
        case .identifier(let name):
            try advance()
            if variables.contains(name) { return .select(.event, name) }
            switch name {
            case "event" where variables.isEmpty: return .event
            case "true": return .literal(.bool(true))
            case "false": return .literal(.bool(false))
            case "null": return .literal(.null)
            case "has": return try has()
            default: break
            }
            if current == .symbol("(") {
                guard let function = RouteMatchFunction.functions[name] else {
                    throw RouteMatchProblem("the function '\(name)' is not supported")
                }
                return .call(function, try arguments(of: name, count: 1))
            }
            let bound =
                variables.isEmpty ? "'event' is" : variables.sorted().map { "'\($0)'" }.joined(separator: ", ") + " are"
            throw RouteMatchProblem("unknown identifier '\(name)': only \(bound) bound")
        case .symbol("["):
            throw RouteMatchProblem("list literals are not supported")
        case .symbol("{"):
            throw RouteMatchProblem("map literals are not supported")
        default:
            throw RouteMatchProblem("unexpected \(Self.describe(token))")
        }
    }

    /// `has(base.field)`: the argument must be a field selection.
    private mutating func has() throws(RouteMatchProblem) -> RouteMatchNode {
        let arguments = try arguments(of: "has", count: 1)
        guard case .select(let base, let field) = arguments[0] else {
            throw RouteMatchProblem("has() takes a field selection, such as has(event.data.x)")
        }
        return .has(base, field)
    }

    /// `( argument, ... )` after a function's name, exactly `count` of them.
    private mutating func arguments(of name: String, count: Int) throws(RouteMatchProblem) -> [RouteMatchNode] {
        try enter()
        defer { depth -= 1 }
        try expect("(")
        var arguments: [RouteMatchNode] = []
        if current != .symbol(")") {
            arguments.append(try or())
            while current == .symbol(",") {
                try advance()
                arguments.append(try or())
            }
        }
        try expect(")")
        guard arguments.count == count else {
            throw RouteMatchProblem("\(name)() takes \(count) argument\(count == 1 ? "" : "s"), not \(arguments.count)")
        }
        return arguments
    }

    private mutating func enter() throws(RouteMatchProblem) {
        depth += 1
        guard depth <= RouteMatch.maxDepth else {
            throw RouteMatchProblem("the expression nests more than \(RouteMatch.maxDepth) levels deep")
        }
    }

    private mutating func expect(_ symbol: String) throws(RouteMatchProblem) {
        guard current == .symbol(symbol) else {
            throw RouteMatchProblem("expected '\(symbol)', found \(Self.describe(current))")
        }
        try advance()
    }

    static func describe(_ token: Token) -> String {
        switch token {
        case .identifier(let name): "'\(name)'"
        case .int(let value): "\(value)"
        case .double(let value): "\(value)"
        case .string: "a string"
        case .symbol(let symbol): "'\(symbol)'"
        case .end: "end of the expression"
        }
    }

    // MARK: tokens

    /// Symbols of CEL the subset does not have, with what to say about them.
    private static let unsupported: [String: String] = [
        "+": "arithmetic ('+') is not supported", "*": "arithmetic ('*') is not supported",
        "/": "arithmetic ('/') is not supported", "%": "arithmetic ('%') is not supported",
        "?": "the conditional operator ('? :') is not supported",
        ":": "the conditional operator ('? :') is not supported",
    ]

    private mutating func advance() throws(RouteMatchProblem) {
        while position < bytes.count,
            bytes[position] == 0x20 || bytes[position] == 0x09 || bytes[position] == 0x0A
                || bytes[position] == 0x0D
        {
            position += 1
        }
        guard position < bytes.count else {
            current = .end
            return
        }
        let byte = bytes[position]
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "_"):
            let start = position
            while position < bytes.count, Self.isIdentifier(bytes[position]) { position += 1 }
            let name = String(decoding: bytes[start..<position], as: UTF8.self)
            if position < bytes.count, bytes[position] == UInt8(ascii: "\"") || bytes[position] == UInt8(ascii: "'"),
                ["r", "R", "b", "B"].contains(name)
            {
                throw RouteMatchProblem(
                    name.lowercased() == "r"
                        ? "raw string literals are not supported" : "bytes literals are not supported")
            }
            if name == "in" { throw RouteMatchProblem("the 'in' operator is not supported") }
            current = .identifier(name)
        case UInt8(ascii: "0")...UInt8(ascii: "9"):
            current = try number()
        case UInt8(ascii: "\""), UInt8(ascii: "'"):
            current = .string(try string(quote: byte))
        default:
            let two =
                position + 1 < bytes.count ? String(decoding: bytes[position...(position + 1)], as: UTF8.self) : ""
            if ["==", "!=", "<=", ">=", "&&", "||"].contains(two) {
                position += 2
                current = .symbol(two)
                return
            }
            let one = String(UnicodeScalar(byte))
            if "()[]{}.,<>!-".contains(one) {
                position += 1
                current = .symbol(one)
                return
            }
            if let why = Self.unsupported[one] { throw RouteMatchProblem(why) }
            if one == "=" || one == "&" || one == "|" {
                throw RouteMatchProblem("unexpected '\(one)' (did you mean '\(one)\(one)'?)")
            }
            throw RouteMatchProblem(
                byte < 0x80 ? "unexpected character '\(one)'" : "unexpected non-ASCII character outside a string")
        }
    }

    private static func isIdentifier(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
            || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: "_")
    }

    /// An integer (decimal or `0x` hex, an optional `u` suffix) or a double (`1.5`, `1e3`).
    private mutating func number() throws(RouteMatchProblem) -> Token {
        let start = position
        if bytes[position] == UInt8(ascii: "0"), position + 1 < bytes.count,
            bytes[position + 1] == UInt8(ascii: "x") || bytes[position + 1] == UInt8(ascii: "X")
        {
            position += 2
            let digits = position
            while position < bytes.count, Self.isIdentifier(bytes[position]) { position += 1 }
            var text = String(decoding: bytes[digits..<position], as: UTF8.self)
            if text.hasSuffix("u") || text.hasSuffix("U") { text.removeLast() }
            guard let value = Int64(text, radix: 16) else { throw RouteMatchProblem("invalid hex literal") }
            return .int(value)
        }
        var isDouble = false
        func digits() {
            while position < bytes.count, bytes[position] >= 0x30, bytes[position] <= 0x39 { position += 1 }
        }
        digits()
        if position + 1 < bytes.count, bytes[position] == UInt8(ascii: "."), bytes[position + 1] >= 0x30,
            bytes[position + 1] <= 0x39
        {
            isDouble = true
            position += 1
            digits()
        }
        if position < bytes.count, bytes[position] == UInt8(ascii: "e") || bytes[position] == UInt8(ascii: "E") {
            isDouble = true
            position += 1
            if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
                position += 1
            }
            digits()
        }
        let text = String(decoding: bytes[start..<position], as: UTF8.self)
        if !isDouble, position < bytes.count,
            bytes[position] == UInt8(ascii: "u") || bytes[position] == UInt8(ascii: "U")
        {
            position += 1
        }
        if position < bytes.count, Self.isIdentifier(bytes[position]) {
            throw RouteMatchProblem("invalid number literal '\(text)\(String(UnicodeScalar(bytes[position])))'")
        }
        if isDouble {
            guard let value = Double(text), value.isFinite else { throw RouteMatchProblem("invalid number '\(text)'") }
            return .double(value)
        }
        guard let value = Int64(text) else { throw RouteMatchProblem("the integer \(text) is out of range") }
        return .int(value)
    }

    /// A quoted string with CEL's common escapes; triple-quoted strings are not supported.
    private mutating func string(quote: UInt8) throws(RouteMatchProblem) -> String {
        if position + 2 < bytes.count, bytes[position + 1] == quote, bytes[position + 2] == quote {
            throw RouteMatchProblem("triple-quoted strings are not supported")
        }
        position += 1
        var value: [UInt8] = []
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case quote:
                return String(decoding: value, as: UTF8.self)
            case 0x0A, 0x0D:
                throw RouteMatchProblem("unterminated string literal (a line break inside quotes)")
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { break }
                let escape = bytes[position]
                position += 1
                switch escape {
                case UInt8(ascii: "\\"), UInt8(ascii: "\""), UInt8(ascii: "'"), UInt8(ascii: "`"), UInt8(ascii: "?"):
                    value.append(escape)
                case UInt8(ascii: "n"): value.append(0x0A)
                case UInt8(ascii: "r"): value.append(0x0D)
                case UInt8(ascii: "t"): value.append(0x09)
                case UInt8(ascii: "u"), UInt8(ascii: "U"):
                    let count = escape == UInt8(ascii: "u") ? 4 : 8
                    guard position + count <= bytes.count,
                        let code = UInt32(
                            String(decoding: bytes[position..<(position + count)], as: UTF8.self), radix: 16),
                        let scalar = UnicodeScalar(code)
                    else { throw RouteMatchProblem("invalid \\\(String(UnicodeScalar(escape))) escape in a string") }
                    position += count
                    value.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    throw RouteMatchProblem("the escape '\\\(String(UnicodeScalar(escape)))' is not supported")
                }
            default:
                value.append(byte)
            }
        }
        throw RouteMatchProblem("unterminated string literal")
    }
}
