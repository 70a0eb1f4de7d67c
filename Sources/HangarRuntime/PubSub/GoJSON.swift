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
}
