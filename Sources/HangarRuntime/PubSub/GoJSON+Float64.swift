/// Numbers as daprd sees them on the subscriber's side: it decodes a stored CloudEvent with `json.Unmarshal` into
/// `map[string]any` *without* `UseNumber`, so every number is a float64, and writes `data` back with `json.Marshal`
/// (reference §3.1). A number literal therefore comes out as Go prints that float64: `1.50` as `1.5`, `1e2` as
/// `100`, 2^53 + 1 as 2^53, and a literal beyond float64's range fails the decoding.
extension GoJSON {
    /// A number past float64's range: Go's decoder refuses the event.
    package struct NumberOutOfRange: Error, CustomStringConvertible {
        package var literal: String
        package init(literal: String) { self.literal = literal }
        package var description: String { "the number \(literal) is out of range of a float64" }
    }

    /// The value as `json.Marshal` writes it after `json.Unmarshal` read it into `any` (numbers as float64);
    /// objects' keys sorted byte-wise and strings escaped as `encoded` does.
    package func encodedAsFloat64() throws(NumberOutOfRange) -> [UInt8] {
        var out: [UInt8] = []
        try encodeAsFloat64(into: &out)
        return out
    }

    func encodeAsFloat64(into out: inout [UInt8]) throws(NumberOutOfRange) {
        switch self {
        case .null, .bool, .string: encode(into: &out)
        case .number(let literal):
            guard let text = Self.float64Literal(literal) else { throw NumberOutOfRange(literal: literal) }
            out.append(contentsOf: text.utf8)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                try item.encodeAsFloat64(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            var first = true
            for key in members.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                Self.encodeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                try members[key]!.encodeAsFloat64(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// The number a literal denotes as a float64 (nil past its range), as `json.Unmarshal` reads it into `any`.
    package static func float64(_ literal: String) -> Double? {
        guard let value = Double(literal), value.isFinite else { return nil }
        return value
    }

    /// What `json.Marshal` writes for the float64 `literal` decodes to; nil when it is past float64's range.
    static func float64Literal(_ literal: String) -> String? {
        // Most numbers are small integers: exact in a float64 and written back as they came (JSON has no leading
        // zeros, and Go writes -0 as `-0` too).
        var utf8 = literal.utf8[...]
        if utf8.first == UInt8(ascii: "-") { utf8 = utf8.dropFirst() }
        if !utf8.isEmpty, utf8.count <= 15, utf8.allSatisfy({ $0 &- 0x30 < 10 }) { return literal }
        guard let value = float64(literal) else { return nil }
        return format(value)
    }

    /// Go's `strconv.AppendFloat(f, 'f' or 'e', -1, 64)` as `encoding/json`'s float encoder calls it: the shortest
    /// digits that read back as `value`; `'e'` below 1e-6 and from 1e21 on, with a two-digit negative exponent's
    /// leading zero dropped (`1e-7`, `1e+21`).
    static func format(_ value: Double) -> String {
        if value == 0 { return value.sign == .minus ? "-0" : "0" }
        // Swift's description is the shortest round-tripping representation too (closest on ties, as Go's).
        let (digits, point) = shortestDigits(value.magnitude.description)
        var out = value < 0 ? "-" : ""
        let magnitude = value.magnitude
        if magnitude < 1e-6 || magnitude >= 1e21 {
            out.append(digits.first!)
            if digits.count > 1 {
                out.append(".")
                out.append(contentsOf: digits.dropFirst())
            }
            let exponent = point - 1
            out.append(exponent < 0 ? "e-" : "e+")
            out.append(String(abs(exponent)))
        } else if point <= 0 {
            out.append("0.")
            out.append(String(repeating: "0", count: -point))
            out.append(contentsOf: digits)
        } else if point >= digits.count {
            out.append(contentsOf: digits)
            out.append(String(repeating: "0", count: point - digits.count))
        } else {
            out.append(contentsOf: digits.prefix(point))
            out.append(".")
            out.append(contentsOf: digits.dropFirst(point))
        }
        return out
    }

    /// The significant digits of a positive number's description (`1.5`, `100.0`, `1e-07`, `1.25e+17`) and where
    /// the decimal point goes: the value is 0.`digits` × 10^`point`.
    private static func shortestDigits(_ text: String) -> (digits: String, point: Int) {
        let parts = text.split(separator: "e", maxSplits: 1)
        let exponent = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        let mantissa = parts[0].split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let whole = mantissa[0]
        let fraction = mantissa.count > 1 ? mantissa[1] : ""
        var digits = Substring(whole + fraction)
        var point = whole.count + exponent
        while digits.first == "0" {
            digits = digits.dropFirst()
            point -= 1
        }
        while digits.last == "0" { digits = digits.dropLast() }
        return (String(digits), point)
    }
}
