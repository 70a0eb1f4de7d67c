/// A JSON value as Go's `encoding/json` sees it when Dapr builds a CloudEvent: decoded with `UseNumber` (a number
/// keeps its literal, so no precision is lost) and encoded back as `json.Marshal` writes it (compact, object keys
/// sorted byte-wise, `<`, `>`, `&`, U+2028 and U+2029 escaped). Foundation's `JSONSerialization` would turn
/// numbers into doubles and escape differently, so the envelope is built with this instead.
package indirect enum GoJSON: Sendable, Hashable {
    case null
    case bool(Bool)
    /// A number's literal as it was written (valid JSON number syntax).
    case number(String)
    case string(String)
    case array([GoJSON])
    /// Members in no particular order; a key given twice keeps its last value (as Go's decoder).
    case object([String: GoJSON])

    /// How deep arrays and objects may nest: a hostile payload must not exhaust the stack. Deeper input is not
    /// JSON to this decoder (Go's own limit is 10000; real CloudEvents nest a handful of levels).
    static let maxDepth = 512

    /// Decodes the first JSON value of `bytes`, as Go's `json.Decoder.Decode` does: leading whitespace is skipped
    /// and anything after the value is ignored (`{"a":1} trailing` decodes). Nil when there is no valid value.
    /// Invalid UTF-8 inside strings becomes U+FFFD, as in Go.
    package static func decodePrefix(_ bytes: some Collection<UInt8>) -> GoJSON? {
        let array = Array(bytes)
        var parser = Parser(bytes: array)
        parser.skipWhitespace()
        return try? parser.value(depth: 0)
    }

    /// The compact encoding `json.Marshal` produces.
    package var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    package func encode(into out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let literal): out.append(contentsOf: literal.utf8)
        case .string(let text): Self.encodeString(text, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                item.encode(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            // Go sorts map keys as byte strings.
            for (index, key) in members.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                Self.encodeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                members[key]!.encode(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A string as Go's encoder writes it (HTML-safe escaping, the default of `json.Marshal`). Runs of bytes that
    /// need no escape are copied at once: most strings (ids, types, topics) are plain ASCII.
    static func encodeString(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            var start = 0
            var index = 0
            while index < bytes.count {
                let byte = bytes[index]
                let scalar: UInt32
                let width: Int
                switch byte {
                case 0x00..<0x20, 0x22, 0x5C, 0x3C, 0x3E, 0x26:
                    scalar = UInt32(byte)
                    width = 1
                case 0xE2 where index + 2 < bytes.count && bytes[index + 1] == 0x80
                    && (bytes[index + 2] == 0xA8 || bytes[index + 2] == 0xA9):
                    // U+2028 and U+2029, which Go escapes for JavaScript's sake.
                    scalar = bytes[index + 2] == 0xA8 ? 0x2028 : 0x2029
                    width = 3
                default:
                    index += 1
                    continue
                }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
                appendEscape(of: scalar, into: &out)
                index += width
                start = index
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<bytes.count]))
        }
        out.append(UInt8(ascii: "\""))
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The escape Go writes for `scalar` (one `encodeString` escapes).
    private static func appendEscape(of scalar: UInt32, into out: inout [UInt8]) {
        switch scalar {
        case 0x22: out.append(contentsOf: [0x5C, 0x22])
        case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
        case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
        case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
        case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
        case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
        case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
        default:
            let value = Int(scalar)
            out.append(contentsOf: [0x5C, UInt8(ascii: "u")])
            for shift in [12, 8, 4, 0] { out.append(hexDigits[(value >> shift) & 0xF]) }
        }
    }

    private struct Invalid: Error {}

    /// A recursive-descent parser over bytes, following RFC 8259 as Go's scanner does.
    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        mutating func expect(_ literal: String) throws(Invalid) {
            for byte in literal.utf8 {
                guard current == byte else { throw Invalid() }
                index += 1
            }
        }

        mutating func value(depth: Int) throws(Invalid) -> GoJSON {
            guard depth < GoJSON.maxDepth, let byte = current else { throw Invalid() }
            switch byte {
            case UInt8(ascii: "{"):
                index += 1
                var members: [String: GoJSON] = [:]
                skipWhitespace()
                if current == UInt8(ascii: "}") {
                    index += 1
                    return .object(members)
                }
                while true {
                    skipWhitespace()
                    guard current == UInt8(ascii: "\"") else { throw Invalid() }
                    let key = try string()
                    skipWhitespace()
                    try expect(":")
                    skipWhitespace()
                    members[key] = try value(depth: depth + 1)
                    skipWhitespace()
                    if current == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    try expect("}")
                    return .object(members)
                }
            case UInt8(ascii: "["):
                index += 1
                var items: [GoJSON] = []
                skipWhitespace()
                if current == UInt8(ascii: "]") {
                    index += 1
                    return .array(items)
                }
                while true {
                    skipWhitespace()
                    items.append(try value(depth: depth + 1))
                    skipWhitespace()
                    if current == UInt8(ascii: ",") {
                        index += 1
                        continue
                    }
                    try expect("]")
                    return .array(items)
                }
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "t"):
                try expect("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try expect("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try expect("null")
                return .null
            default:
                return .number(try number())
            }
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
        mutating func number() throws(Invalid) -> String {
            let start = index
            func digits() -> Int {
                let from = index
                while let byte = current, byte >= 0x30, byte <= 0x39 { index += 1 }
                return index - from
            }
            if current == UInt8(ascii: "-") { index += 1 }
            if current == UInt8(ascii: "0") {
                index += 1
            } else {
                guard digits() > 0 else { throw Invalid() }
            }
            if current == UInt8(ascii: ".") {
                index += 1
                guard digits() > 0 else { throw Invalid() }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard digits() > 0 else { throw Invalid() }
            }
            return String(decoding: bytes[start..<index], as: UTF8.self)
        }

        mutating func hex4() throws(Invalid) -> UInt32 {
            guard index + 4 <= bytes.count else { throw Invalid() }
            var value: UInt32 = 0
            for byte in bytes[index..<(index + 4)] {
                let digit: UInt8
                switch byte {
                case 0x30...0x39: digit = byte - 0x30
                case 0x61...0x66: digit = byte - 0x61 + 10
                case 0x41...0x46: digit = byte - 0x41 + 10
                default: throw Invalid()
                }
                value = value << 4 | UInt32(digit)
            }
            index += 4
            return value
        }

        mutating func string() throws(Invalid) -> String {
            index += 1  // the opening quote
            var out: [UInt8] = []
            while true {
                guard let byte = current else { throw Invalid() }
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = current else { throw Invalid() }
                    index += 1
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escaped)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var code = try hex4()
                        if (0xD800..<0xDC00).contains(code), index + 6 <= bytes.count, bytes[index] == 0x5C,
                            bytes[index + 1] == UInt8(ascii: "u")
                        {
                            let saved = index
                            index += 2
                            let low = try hex4()
                            if (0xDC00..<0xE000).contains(low) {
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                index = saved
                            }
                        }
                        // A lone surrogate is U+FFFD, as in Go.
                        let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                        out.append(contentsOf: String(scalar).utf8)
                    default: throw Invalid()
                    }
                case 0x00..<0x20:
                    throw Invalid()
                default:
                    out.append(byte)
                    index += 1
                }
            }
        }
    }
}
