package import Foundation

/// Decoding, as Go's `encoding/json` decodes into `any` with `UseNumber`. Every delivered event is parsed with it
/// (the stored envelope, once), so it works on the bytes in place: no copy of the input, and a string without
/// escapes becomes a `String` straight from its bytes.
extension GoJSON {
    /// Decodes the first JSON value of `bytes`, as Go's `json.Decoder.Decode` does: leading whitespace is skipped
    /// and anything after the value is ignored (`{"a":1} trailing` decodes). Nil when there is no valid value.
    /// Invalid UTF-8 inside strings becomes U+FFFD, as in Go.
    package static func decodePrefix(_ bytes: some Collection<UInt8>) -> GoJSON? {
        if let value = bytes.withContiguousStorageIfAvailable({ decodePrefix(buffer: $0) }) { return value }
        return Array(bytes).withUnsafeBufferPointer { decodePrefix(buffer: $0) }
    }

    /// `decodePrefix` of `data`'s bytes, read in place.
    package static func decodePrefix(_ data: Data) -> GoJSON? {
        data.withUnsafeBytes { decodePrefix(buffer: $0.bindMemory(to: UInt8.self)) }
    }

    private static func decodePrefix(buffer: UnsafeBufferPointer<UInt8>) -> GoJSON? {
        var parser = Parser(bytes: buffer)
        parser.skipWhitespace()
        return try? parser.value(depth: 0)
    }

    private struct Invalid: Error {}

    /// A recursive-descent parser over bytes, following RFC 8259 as Go's scanner does. Only used within the
    /// `withUnsafe…` call that lends it its bytes.
    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ literal: StaticString) throws(Invalid) {
            let count = literal.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw Invalid() }
            let start = literal.utf8Start
            for offset in 0..<count where bytes[index + offset] != start[offset] { throw Invalid() }
            index += count
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
                    guard current == UInt8(ascii: ":") else { throw Invalid() }
                    index += 1
                    skipWhitespace()
                    members[key] = try value(depth: depth + 1)
                    skipWhitespace()
                    switch current {
                    case UInt8(ascii: ","): index += 1
                    case UInt8(ascii: "}"):
                        index += 1
                        return .object(members)
                    default: throw Invalid()
                    }
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
                    switch current {
                    case UInt8(ascii: ","): index += 1
                    case UInt8(ascii: "]"):
                        index += 1
                        return .array(items)
                    default: throw Invalid()
                    }
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

        /// Skips a run of ASCII digits; how many there were.
        mutating func digits() -> Int {
            let from = index
            while index < bytes.count, bytes[index] &- 0x30 < 10 { index += 1 }
            return index - from
        }

        /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
        mutating func number() throws(Invalid) -> String {
            let start = index
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
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
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

        /// A string at the opening quote. The common case, no escape before the closing quote, makes the `String`
        /// from the bytes in place; an escape switches to building the bytes.
        mutating func string() throws(Invalid) -> String {
            index += 1  // the opening quote
            let start = index
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    index += 1
                    return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<(index - 1)]), as: UTF8.self)
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw Invalid() }
                index += 1
            }
            guard index < bytes.count else { throw Invalid() }
            var out: [UInt8] = []
            out.reserveCapacity(index - start + 16)
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
            return try escapedString(continuing: &out)
        }

        /// The rest of a string with escapes, from the first backslash, appended to `out`.
        mutating func escapedString(continuing out: inout [UInt8]) throws(Invalid) -> String {
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
