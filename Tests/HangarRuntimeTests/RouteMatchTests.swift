import Foundation
import Testing

@testable import HangarRuntime

@Suite("Routing rule expressions (RouteMatch)")
struct RouteMatchTests {
    /// A CloudEvent as delivery sees it: the stored envelope decoded by `GoJSON` (numbers keep their literals and
    /// are read as doubles).
    static let event: [String: GoJSON] = {
        let json = #"""
            {"specversion": "1.0", "id": "1", "type": "widget", "source": "orders", "topic": "orders",
             "pubsubname": "pubsub", "datacontenttype": "application/json",
             "data": {"amount": 12000, "price": 9.5, "count": 3, "name": "bolt", "important": true, "off": false,
                      "nothing": null, "tags": ["a", "b"], "nested": {"deep": {"x": "y"}}, "text": "héllo",
                      "numeric": "42"},
             "plain": "just text"}
            """#
        return object(json)
    }()

    static func object(_ json: String) -> [String: GoJSON] {
        guard case .object(let object)? = GoJSON.decodePrefix(Data(json.utf8)) else { fatalError("not an object") }
        return object
    }

    func holds(_ expression: String) throws -> Bool {
        try RouteMatch(expression).evaluate(Self.event)
    }

    @Test(
        "expressions Dapr's docs and users write evaluate as CEL does",
        arguments: [
            (#"event.type == "widget""#, true),
            (#"event.type == "gadget""#, false),
            (#"event.type != "gadget""#, true),
            (#"event.type == 'widget'"#, true),
            (#"event["type"] == "widget""#, true),
            (#"event.data["name"] == "bolt""#, true),
            ("int(event.data.amount) > 10000", true),
            ("event.data.amount > 10000", true),
            ("event.data.amount >= 12000 && event.data.amount <= 12000", true),
            ("event.data.amount < 12000", false),
            ("event.data.count == 3", true),
            ("event.data.count == 3.0", true),
            ("event.data.price > 9", true),
            ("event.data.price < 9.75", true),
            ("double(event.data.count) == 3.0", true),
            ("int(event.data.price) == 9", true),
            (#"string(event.data.count) == "3""#, true),
            (#"int(event.data.numeric) == 42"#, true),
            ("event.data.important", true),
            ("event.data.important == true", true),
            ("!event.data.off", true),
            ("event.data.nothing == null", true),
            ("event.data.name == null", false),
            (#"event.data.nested.deep.x == "y""#, true),
            (#"event.data.tags[1] == "b""#, true),
            ("size(event.data.tags) == 2", true),
            (#"size(event.data.text) == 5"#, true),
            (#"event.type == "widget" && (event.data.amount > 100 || event.source == "x")"#, true),
            (#"event.type == "gadget" || event.source == "orders""#, true),
            (#"!(event.type == "gadget")"#, true),
            (#"event.source < "p" && "a" < "b""#, true),
            (#"event.type.startsWith("wid") && event.type.endsWith("get") && event.type.contains("dge")"#, true),
            ("has(event.data.name)", true),
            ("has(event.data.missing)", false),
            ("has(event.data.nested.deep)", true),
            ("-event.data.count < 0", true),
            ("event.data.count == 0x3", true),
            ("1 == 1 && true != false && null == null", true),
            (#"event.data.text == "h\u00e9llo""#, true),
            (#"event.data.tags == event.data.tags"#, true),
            ("event.data.count == \"3\"", false),
        ])
    func evaluates(expression: String, expected: Bool) throws {
        #expect(try holds(expression) == expected, "\(expression)")
    }

    @Test(
        "evaluation errors: a missing key, a field of a non-object, a non-boolean result, a mismatched comparison",
        arguments: [
            ("event.data.missing == 1", "no such key: 'missing'"),
            ("event.plain.x == 1", "no such key: 'x'"),
            ("event.data.name.first == 1", "no such key"),
            ("event.type", "not a boolean"),
            ("event.data.count", "not a boolean"),
            ("event.data.amount > \"10\"", "no such overload"),
            ("event.data.name < 3", "no such overload"),
            ("!event.type", "no such overload"),
            ("event.data.tags[5] == 1", "out of range"),
            ("int(event.data.name) == 1", "not an integer"),
            (#"event.type == "widget" && event.data.missing"#, "no such key"),
            ("has(event.plain.x)", "not an object"),
        ])
    func evaluationError(expression: String, message: String) throws {
        let match = try RouteMatch(expression)
        #expect {
            _ = try match.evaluate(Self.event)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("&& and || absorb an error when the other side decides, as CEL does")
    func absorption() throws {
        #expect(try holds("event.data.missing == 1 || true") == true)
        #expect(try holds("true || event.data.missing == 1") == true)
        #expect(try holds("event.data.missing == 1 && false") == false)
        #expect(try holds("false && event.data.missing") == false)
    }

    @Test(
        "what the subset does not have is refused at compile time, naming it",
        arguments: [
            ("event.data.n + 1 > 2", "arithmetic ('+') is not supported"),
            ("event.data.n * 2 > 2", "arithmetic ('*') is not supported"),
            ("event.data.n / 2 > 2", "arithmetic ('/') is not supported"),
            ("event.data.n % 2 == 0", "arithmetic ('%') is not supported"),
            ("event.data.ok ? true : false", "conditional operator"),
            (#"event.type in ["a", "b"]"#, "the 'in' operator is not supported"),
            (#"event.type.matches("w.*")"#, "the method 'matches' is not supported"),
            ("timestamp(event.time) > 1", "the function 'timestamp' is not supported"),
            ("message.type == 1", "unknown identifier 'message'"),
            ("[1, 2] == event.data.tags", "list literals are not supported"),
            (#"{"a": 1} == event.data"#, "map literals are not supported"),
            (#"event.type == r"widget""#, "raw string literals are not supported"),
            (#"event.type == b"widget""#, "bytes literals are not supported"),
            (#"event.type == """widget""""#, "triple-quoted strings are not supported"),
            (#"event.type == "widget"#, "unterminated string literal"),
            (#"event.type == 'widget"#, "unterminated string literal"),
            ("event.type == \"wid\nget\"", "unterminated string literal"),
            (#"event.type == "\q""#, "the escape '\\q' is not supported"),
            ("event.type = \"widget\"", "did you mean '=='"),
            ("event.type & true", "did you mean '&&'"),
            ("", "the expression is empty"),
            ("   ", "the expression is empty"),
            ("event.", "expected a field name"),
            ("(event.type == \"a\"", "expected ')'"),
            ("event.type == \"a\")", "unexpected ')'"),
            ("event.type ==", "unexpected end of the expression"),
            ("int(1, 2) == 1", "int() takes 1 argument, not 2"),
            ("has(event) == true", "has() takes a field selection"),
            ("99999999999999999999 > 1", "out of range"),
            ("event.type == \"a\" # comment", "unexpected character '#'"),
            ("event.type == ü", "non-ASCII"),
        ])
    func refused(expression: String, message: String) {
        #expect {
            _ = try RouteMatch(expression)
        } throws: { error in
            guard let error = error as? RouteMatchError else { return false }
            return error.message.contains(message) && error.description.contains("match '")
        }
    }

    @Test("hostile expressions are refused without exhausting the stack: deep nesting, 10 KiB, long chains")
    func hostile() throws {
        let deep = String(repeating: "(", count: 10_000) + "true" + String(repeating: ")", count: 10_000)
        #expect(throws: RouteMatchError.self) { try RouteMatch(String(deep.prefix(RouteMatch.maxLength))) }
        #expect { try RouteMatch(deep) } throws: { "\($0)".contains("at most \(RouteMatch.maxLength)") }
        let nots = String(repeating: "!", count: 1000) + "true"
        #expect { try RouteMatch(nots) } throws: { "\($0)".contains("nests more than") }
        let calls = String(repeating: "int(", count: 500) + "1" + String(repeating: ")", count: 500) + " == 1"
        #expect { try RouteMatch(calls) } throws: { "\($0)".contains("nests more than") }
        let fields = "event" + String(repeating: ".a", count: 500) + " == 1"
        #expect { try RouteMatch(fields) } throws: { "\($0)".contains("nests more than") }
        let relations = String(repeating: "true == ", count: 400) + "true"
        #expect { try RouteMatch(relations) } throws: { "\($0)".contains("nests more than") }
        let tenKiB = #"event.type == ""# + String(repeating: "x", count: 10 * 1024) + #"""#
        #expect { try RouteMatch(tenKiB) } throws: { "\($0)".contains("at most") }
        let unterminated = #"event.type == ""# + String(repeating: "\\", count: 2001)
        #expect(throws: RouteMatchError.self) { try RouteMatch(unterminated) }
        // A long flat chain of || is one level, and evaluates.
        let wide = (0..<150).map { _ in #"event.type == "x""# }.joined(separator: " || ") + " || true"
        #expect(wide.utf8.count <= RouteMatch.maxLength)
        #expect(try RouteMatch(wide).evaluate(Self.event))
    }

    @Test("nesting up to the bound compiles and evaluates; one level more is refused")
    func nestingBound() throws {
        func nested(_ depth: Int) -> String {
            String(repeating: "(", count: depth) + "true" + String(repeating: ")", count: depth)
        }
        #expect(try RouteMatch(nested(RouteMatch.maxDepth)).evaluate(Self.event))
        #expect { try RouteMatch(nested(RouteMatch.maxDepth + 1)) } throws: { "\($0)".contains("nests more than") }
        // Each field selection counts as a level too.
        let path = "event" + String(repeating: ".a", count: RouteMatch.maxDepth)
        #expect(throws: Never.self) { try RouteMatch(path + " == 1") }
        #expect { try RouteMatch(path + ".a == 1") } throws: { "\($0)".contains("nests more than") }
    }

    @Test("numbers are the doubles their literals denote, as Dapr's float64 decoding makes them")
    func numbersAsDoubles() throws {
        let event = Self.object(
            #"{"type":"widget","data":{"n":3,"x":2.5e0,"ok":true,"one":1.0,"hundred":1e2,"big":9007199254740993}}"#)
        #expect(try RouteMatch("event.data.n == 3 && event.data.x > 2 && event.data.ok").evaluate(event))
        #expect(try RouteMatch("event.data.one == 1 && event.data.hundred == 100").evaluate(event))
        // 2^53 + 1 is 2^53 as a double.
        #expect(try RouteMatch("event.data.big == 9007199254740992").evaluate(event))
        #expect(throws: RouteMatchError.self) { try RouteMatch("event.data.one").evaluate(event) }
        let huge = Self.object(#"{"data":{"n":1e999}}"#)
        #expect { try RouteMatch("event.data.n > 1").evaluate(huge) } throws: { "\($0)".contains("out of range") }
    }

    @Test("two matches are equal when their expressions are")
    func equality() throws {
        #expect(try RouteMatch("event.type == \"a\"") == RouteMatch("event.type == \"a\""))
        #expect(try RouteMatch("event.type == \"a\"") != RouteMatch("event.type == \"b\""))
    }
}
