package import NIOCore

/// One RESP value, as Redis sends it in RESP2 or RESP3 (`redis/redis-specifications:protocol/RESP3.md`). Strings
/// stay bytes (`ByteBuffer`): Redis values are binary, and a reply is only text where the command says so.
///
/// RESP2's null bulk string (`$-1`) and null array (`*-1`) decode as `.null`, like RESP3's `_`, so a caller sees
/// one null whichever protocol the connection speaks. Attributes (`|`) are read and dropped by the decoder: they
/// annotate the value that follows and no command Hangar sends needs them.
package enum RESPValue: Sendable, Hashable {
    /// `+OK`: a short, binary-safe-free status string.
    case simpleString(ByteBuffer)
    /// `-ERR message` (RESP2 and RESP3) or `!<len>` (a RESP3 blob error): the server refused the command.
    case error(ByteBuffer)
    /// `:<n>`.
    case integer(Int64)
    /// `$<len>`: a binary-safe string.
    case bulkString(ByteBuffer)
    /// `*<n>`.
    case array([RESPValue])
    /// `_`, `$-1` or `*-1`.
    case null
    /// `,<float>` (RESP3), including `inf`, `-inf` and `nan`.
    case double(Double)
    /// `#t` / `#f` (RESP3).
    case boolean(Bool)
    /// `=<len>` (RESP3): a string with a three-letter format (`txt`, `mkd`) before its text.
    case verbatimString(format: String, ByteBuffer)
    /// `(<digits>` (RESP3): an integer too large for 64 bits, kept as its decimal text.
    case bigNumber(String)
    /// `%<n>` (RESP3): key-value pairs in the server's order.
    case map([Pair])
    /// `~<n>` (RESP3).
    case set([RESPValue])
    /// `><n>` (RESP3): out-of-band data (pub/sub messages, invalidations), not the reply to a command.
    case push([RESPValue])

    /// One entry of a RESP3 map.
    package struct Pair: Sendable, Hashable {
        package var key: RESPValue
        package var value: RESPValue

        package init(_ key: RESPValue, _ value: RESPValue) {
            self.key = key
            self.value = value
        }
    }
}

extension RESPValue {
    /// A bulk or simple string as bytes; nil for anything else.
    package var bytes: ByteBuffer? {
        switch self {
        case .bulkString(let bytes), .simpleString(let bytes), .verbatimString(_, let bytes): bytes
        default: nil
        }
    }

    /// A bulk or simple string as UTF-8 text (invalid sequences repaired); nil for anything else.
    package var string: String? { bytes.map { String(buffer: $0) } }

    /// The elements of an array, set or push; the keys and values, in order, of a map (RESP2 servers answer
    /// HELLO-style commands with flat arrays, so a caller can read either form the same way); nil otherwise.
    package var elements: [RESPValue]? {
        switch self {
        case .array(let items), .set(let items), .push(let items): items
        case .map(let pairs): pairs.flatMap { [$0.key, $0.value] }
        default: nil
        }
    }

    /// An integer reply's value; nil for anything else.
    package var integer: Int64? {
        if case .integer(let value) = self { value } else { nil }
    }

    /// The server's error message when this is an error reply.
    package var errorMessage: String? {
        if case .error(let message) = self { String(buffer: message) } else { nil }
    }
}
