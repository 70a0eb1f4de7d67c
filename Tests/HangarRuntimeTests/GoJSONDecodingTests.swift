import Foundation
import Testing

@testable import HangarRuntime

/// `GoJSON`'s decoder on the bytes in place (the delivery path parses every stored envelope with it), and numbers
/// written as Go writes the float64 `json.Unmarshal` made of them (the `data` Dapr's gRPC delivery carries).
@Suite("GoJSON decoding and float64 numbers")
struct GoJSONDecodingTests {
    static let texts: [String] = [
        #"{"a":1,"b":[true,false,null],"c":{"d":"e"}}"#,
        #"  {"a" : 1 , "b" : [ ] , "c" : { } }  trailing"#,
        #""plain""#,
        #""with \"escapes\" in the middle \\ and at the end\n""#,
        #""\u00e9\ud83d\ude00 \u2028 \/ \b\f\r\t""#,
        #""é 😀 raw UTF-8""#,
        #""lone \ud800 surrogate""#,
        #"-0.5e+10"#,
        #"[1, 2.50, -3E-2, 0, 123456789012345678901234567890]"#,
        #"{"dup":1,"dup":2}"#,
        #"{"a":01}"#,
        #"{"a":1"#,
        #""unterminated"#,
        #""bad \x escape""#,
        "\"control \u{01} char\"",
        #"[1,]"#,
        #"{"a":1,}"#,
        #"tru"#,
        #"nul"#,
        #"-"#,
        #"1."#,
        #"1e"#,
        "",
    ]

    @Test("Data, arrays and ByteBuffer-like views decode alike", arguments: texts)
    func sameOnEveryInput(_ text: String) throws {
        let array = Array(text.utf8)
        let fromData = GoJSON.decodePrefix(Data(array))
        #expect(fromData == GoJSON.decodePrefix(array))
        #expect(fromData == GoJSON.decodePrefix(array[...]))
        // A non-contiguous collection is copied first, with the same result.
        #expect(fromData == GoJSON.decodePrefix(array.lazy.map { $0 }))
    }

    @Test("strings: escapes anywhere, surrogate pairs, lone surrogates and invalid UTF-8 as Go reads them")
    func strings() throws {
        #expect(GoJSON.decodePrefix(Data(#""a\"b""#.utf8)) == .string("a\"b"))
        #expect(GoJSON.decodePrefix(Data(#""\\""#.utf8)) == .string("\\"))
        #expect(GoJSON.decodePrefix(Data(#""é\u00e9😀\ud83d\ude00""#.utf8)) == .string("éé😀😀"))
        #expect(GoJSON.decodePrefix(Data(#""\ud800x""#.utf8)) == .string("\u{FFFD}x"))
        #expect(GoJSON.decodePrefix(Data([0x22, 0x61, 0xFF, 0x62, 0x22])) == .string("a\u{FFFD}b"))
        #expect(GoJSON.decodePrefix(Data([0x22, 0x5C, 0x6E, 0xFF, 0x22])) == .string("\n\u{FFFD}"))
        #expect(GoJSON.decodePrefix(Data("\"a\u{0A}b\"".utf8)) == nil, "a raw newline is not JSON")
        let long = String(repeating: "x", count: 10_000) + "\\n" + String(repeating: "y", count: 10_000)
        #expect(
            GoJSON.decodePrefix(Data("\"\(long)\"".utf8))
                == .string(String(repeating: "x", count: 10_000) + "\n" + String(repeating: "y", count: 10_000)))
    }

    @Test("objects and arrays nest up to the bound, and no deeper")
    func depth() {
        let ok = String(repeating: "[", count: GoJSON.maxDepth - 1) + String(repeating: "]", count: GoJSON.maxDepth - 1)
        #expect(GoJSON.decodePrefix(Data(ok.utf8)) != nil)
        let deep = String(repeating: "[", count: GoJSON.maxDepth + 1) + String(repeating: "]", count: GoJSON.maxDepth + 1)
        #expect(GoJSON.decodePrefix(Data(deep.utf8)) == nil)
    }

    /// What Go's `json.Marshal(float64)` writes, for the literal `json.Unmarshal` read it from.
    static let float64Cases: [(String, String)] = [
        ("0", "0"), ("-0", "-0"), ("0.0", "0"), ("-0.0", "-0"), ("1", "1"), ("-17", "-17"), ("3.0", "3"),
        ("1.50", "1.5"), ("0.1", "0.1"), ("0.30000000000000004", "0.30000000000000004"), ("1e2", "100"),
        ("1E+2", "100"), ("123456789012345", "123456789012345"), ("999999999999999", "999999999999999"),
        ("9007199254740993", "9007199254740992"), ("123456789012345678", "123456789012345680"),
        ("1e20", "100000000000000000000"), ("1e21", "1e+21"), ("12345678901234567890123", "1.2345678901234568e+22"),
        ("1e308", "1e+308"), ("1.7976931348623157e308", "1.7976931348623157e+308"), ("0.000001", "0.000001"),
        ("1e-6", "0.000001"), ("1e-7", "1e-7"), ("2.5e-7", "2.5e-7"), ("-1.25e-5", "-0.0000125"),
        ("1.5e-10", "1.5e-10"), ("5e-324", "5e-324"), ("1e-400", "0"), ("123.456", "123.456"),
        ("-0.000123", "-0.000123"), ("4.35e+100", "4.35e+100"),
    ]

    @Test("numbers are written as Go writes the float64 they decode to", arguments: float64Cases)
    func float64(_ literal: String, _ expected: String) throws {
        #expect(GoJSON.float64Literal(literal) == expected)
        #expect(try GoJSON.number(literal).encodedAsFloat64() == Array(expected.utf8))
    }

    @Test("a number past float64's range is refused, as Go's decoder refuses it")
    func outOfRange() {
        #expect(GoJSON.float64Literal("1e309") == nil)
        #expect(GoJSON.float64Literal("-1e400") == nil)
        #expect(throws: GoJSON.NumberOutOfRange.self) { try GoJSON.array([.number("1"), .number("1e999")]).encodedAsFloat64() }
    }

    @Test("values are written with sorted keys and Go's escapes, numbers as float64")
    func encodedAsFloat64() throws {
        let value = try #require(
            GoJSON.decodePrefix(Data(#"{"b":[1.0,{"y":2,"x":"<&>"}],"a":null,"é":true,"Z":"\u2028"}"#.utf8)))
        #expect(
            String(decoding: try value.encodedAsFloat64(), as: UTF8.self)
                == #"{"Z":"\u2028","a":null,"b":[1,{"x":"\u003c\u0026\u003e","y":2}],"é":true}"#)
    }
}
