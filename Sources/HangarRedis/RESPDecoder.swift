package import NIOCore

/// Why bytes from the server are not RESP: the connection that read them cannot be trusted any more (the reply
/// boundaries are lost) and must be closed.
package struct RESPProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    package var description: String

    package init(_ description: String) { self.description = "invalid RESP from the server: " + description }
}

/// Reads RESP2 and RESP3 values from a byte stream as they arrive (`redis/redis-specifications:protocol/RESP3.md`):
/// a value is returned only once all of its bytes are there, and nothing is consumed before that, so a frame split
/// across reads at any byte decodes the same. Bulk strings are slices of the read buffer, not copies.
///
/// Every size is bounded (`Limits`): a server, a proxy in between or a corrupted stream must not make hangard
/// allocate without bound, recurse without bound, or wait for a line that never ends. Streamed strings and
/// aggregates (`$?`, `*?`) are refused: no Redis command sends them.
package struct RESPDecoder: NIOSingleStepByteToMessageDecoder {
    package typealias InboundOut = RESPValue

    /// The bounds on what one value may be.
    package struct Limits: Sendable, Hashable {
        /// The largest bulk string (Redis's own `proto-max-bulk-len` default is 512 MiB).
        package var maxBulkBytes = 512 * 1024 * 1024
        /// The most elements one aggregate may declare (a map counts its pairs).
        package var maxElements = 16 * 1024 * 1024
        /// How deep aggregates may nest.
        package var maxDepth = 64
        /// The longest header line (`+...`, `-...`, `:...`, lengths): simple strings and errors are short.
        package var maxLineBytes = 64 * 1024

        package init() {}
    }

    package let limits: Limits

    package init(limits: Limits = Limits()) {
        self.limits = limits
    }

    package mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        var parser = Parser(buffer: buffer, limits: limits)
        guard let value = try parser.value(depth: 0) else { return nil }
        buffer.moveReaderIndex(forwardBy: parser.offset)
        return value
    }

    package mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        if let value = try decode(buffer: &buffer) { return value }
        if seenEOF, buffer.readableBytes > 0 {
            throw RESPProtocolError("the connection closed in the middle of a reply")
        }
        return nil
    }

    /// One attempt to read a value at the buffer's reader index; `offset` is how far it got.
    struct Parser {
        let buffer: ByteBuffer
        let limits: Limits
        var offset = 0

        init(buffer: ByteBuffer, limits: Limits) {
            self.buffer = buffer
            self.limits = limits
        }

        /// The next value, or nil when its bytes have not all arrived.
        mutating func value(depth: Int) throws -> RESPValue? {
            guard depth <= limits.maxDepth else {
                throw RESPProtocolError("aggregates nest deeper than \(limits.maxDepth) levels")
            }
            guard let type = byte(at: offset) else { return nil }
            let start = offset
            offset += 1
            guard let line = try line() else {
                offset = start
                return nil
            }
            let value: RESPValue?
            switch type {
            case UInt8(ascii: "+"): value = .simpleString(line)
            case UInt8(ascii: "-"): value = .error(line)
            case UInt8(ascii: ":"): value = .integer(try Self.integer(line, "integer"))
            case UInt8(ascii: "$"):
                value =
                    try length(line, "bulk string", allowsNull: true).flatMap { count in
                        count < 0 ? .null : try blob(count).map { .bulkString($0) }
                    } ?? nil
            case UInt8(ascii: "!"):
                value = try blob(try length(line, "blob error") ?? 0).map { .error($0) }
            case UInt8(ascii: "="):
                value = try verbatim(try length(line, "verbatim string") ?? 0)
            case UInt8(ascii: "_"):
                guard line.readableBytes == 0 else { throw RESPProtocolError("a null carries data") }
                value = .null
            case UInt8(ascii: "#"):
                switch line.readableBytesView.first {
                case UInt8(ascii: "t") where line.readableBytes == 1: value = .boolean(true)
                case UInt8(ascii: "f") where line.readableBytes == 1: value = .boolean(false)
                default: throw RESPProtocolError("a boolean is neither t nor f")
                }
            case UInt8(ascii: ","):
                guard let double = Double(String(buffer: line)), line.readableBytes > 0,
                    line.readableBytesView.allSatisfy({ Self.doubleBytes.contains($0) })
                else { throw RESPProtocolError("'\(Self.printable(line))' is not a double") }
                value = .double(double)
            case UInt8(ascii: "("):
                let text = String(buffer: line)
                let digits = text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
                guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
                else { throw RESPProtocolError("'\(Self.printable(line))' is not a big number") }
                value = .bigNumber(text)
            case UInt8(ascii: "*"):
                value =
                    try length(line, "array", allowsNull: true).flatMap { count in
                        count < 0 ? .null : try elements(count, depth: depth).map { .array($0) }
                    } ?? nil
            case UInt8(ascii: "~"):
                value = try elements(try length(line, "set") ?? 0, depth: depth).map { .set($0) }
            case UInt8(ascii: ">"):
                value = try elements(try length(line, "push") ?? 0, depth: depth).map { .push($0) }
            case UInt8(ascii: "%"):
                value = try pairs(try length(line, "map") ?? 0, depth: depth).map { .map($0) }
            case UInt8(ascii: "|"):
                // An attribute annotates the value after it: read it, drop it, return that value.
                guard try pairs(try length(line, "attribute") ?? 0, depth: depth) != nil,
                    let annotated = try self.value(depth: depth)
                else {
                    value = nil
                    break
                }
                value = annotated
            default:
                throw RESPProtocolError("unknown type byte 0x\(String(type, radix: 16))")
            }
            if value == nil { offset = start }
            return value
        }

        /// The bytes up to the next CRLF (which is passed over), or nil when it has not arrived.
        mutating func line() throws -> ByteBuffer? {
            let view = buffer.readableBytesView
            var index = view.startIndex + offset
            let end = view.endIndex
            let limit = min(end, index + limits.maxLineBytes + 1)
            while index < limit {
                if view[index] == UInt8(ascii: "\r") {
                    guard index + 1 < end else { return nil }
                    guard view[index + 1] == UInt8(ascii: "\n") else {
                        throw RESPProtocolError("a line has a CR without LF")
                    }
                    let length = index - view.startIndex - offset
                    let line = buffer.getSlice(at: buffer.readerIndex + offset, length: length)!
                    offset += length + 2
                    return line
                }
                if view[index] == UInt8(ascii: "\n") { throw RESPProtocolError("a line ends in LF without CR") }
                index += 1
            }
            if limit < end || index - view.startIndex - offset > limits.maxLineBytes {
                throw RESPProtocolError("a line is longer than \(limits.maxLineBytes) bytes")
            }
            return nil
        }

        /// A declared length or count: a decimal ≥ 0, or −1 where a RESP2 null is allowed. `?` (streamed) refused.
        func length(_ line: ByteBuffer, _ what: String, allowsNull: Bool = false) throws -> Int? {
            if line.readableBytesView.first == UInt8(ascii: "?") {
                throw RESPProtocolError("streamed \(what)s are not supported")
            }
            let count = try Self.integer(line, "\(what) length")
            if count == -1, allowsNull { return -1 }
            guard count >= 0 else { throw RESPProtocolError("a \(what) has the negative length \(count)") }
            let bound = what.hasSuffix("string") || what == "blob error" ? limits.maxBulkBytes : limits.maxElements
            guard count <= bound else {
                throw RESPProtocolError("a \(what) declares \(count), more than the limit of \(bound)")
            }
            return Int(count)
        }

        /// `count` bytes then CRLF, as a slice; nil until they are all there.
        mutating func blob(_ count: Int) throws -> ByteBuffer? {
            guard buffer.readableBytes - offset >= count + 2 else { return nil }
            let view = buffer.readableBytesView
            let after = view.startIndex + offset + count
            guard view[after] == UInt8(ascii: "\r"), view[after + 1] == UInt8(ascii: "\n") else {
                throw RESPProtocolError("a string of \(count) bytes is not followed by CRLF")
            }
            let bytes = buffer.getSlice(at: buffer.readerIndex + offset, length: count)!
            offset += count + 2
            return bytes
        }

        /// `=<len>`: `fmt:` then the text.
        mutating func verbatim(_ count: Int) throws -> RESPValue? {
            guard count >= 4 else { throw RESPProtocolError("a verbatim string is shorter than its format") }
            guard var bytes = try blob(count) else { return nil }
            let format = bytes.readString(length: 3)!
            guard bytes.readInteger(as: UInt8.self) == UInt8(ascii: ":") else {
                throw RESPProtocolError("a verbatim string has no ':' after its format")
            }
            return .verbatimString(format: format, bytes)
        }

        mutating func elements(_ count: Int, depth: Int) throws -> [RESPValue]? {
            var items: [RESPValue] = []
            // Each element takes at least 3 bytes: reserve no more than what has arrived can hold.
            items.reserveCapacity(min(count, (buffer.readableBytes - offset) / 3))
            for _ in 0..<count {
                guard let item = try value(depth: depth + 1) else { return nil }
                items.append(item)
            }
            return items
        }

        mutating func pairs(_ count: Int, depth: Int) throws -> [RESPValue.Pair]? {
            var pairs: [RESPValue.Pair] = []
            pairs.reserveCapacity(min(count, (buffer.readableBytes - offset) / 6))
            for _ in 0..<count {
                guard let key = try value(depth: depth + 1), let value = try value(depth: depth + 1) else { return nil }
                pairs.append(RESPValue.Pair(key, value))
            }
            return pairs
        }

        func byte(at offset: Int) -> UInt8? {
            offset < buffer.readableBytes ? buffer.getInteger(at: buffer.readerIndex + offset, as: UInt8.self) : nil
        }

        /// The bytes a RESP3 double may contain (`1.5`, `-2e10`, `inf`, `-inf`, `nan`).
        static let doubleBytes = Set("0123456789+-.eEinfa".utf8)

        /// A signed decimal that fits 64 bits.
        static func integer(_ line: ByteBuffer, _ what: String) throws -> Int64 {
            var view = line.readableBytesView[...]
            var negative = false
            if let sign = view.first, sign == UInt8(ascii: "-") || sign == UInt8(ascii: "+") {
                negative = sign == UInt8(ascii: "-")
                view = view.dropFirst()
            }
            guard !view.isEmpty else { throw RESPProtocolError("an empty \(what)") }
            var value: Int64 = 0
            for byte in view {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                    throw RESPProtocolError("'\(printable(line))' is not a valid \(what)")
                }
                let digit = Int64(byte - UInt8(ascii: "0"))
                let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) =
                    negative ? times.subtractingReportingOverflow(digit) : times.addingReportingOverflow(digit)
                guard !overflow1, !overflow2 else {
                    throw RESPProtocolError("the \(what) \(printable(line)) overflows 64 bits")
                }
                value = sum
            }
            return value
        }

        /// At most 40 bytes of `line` for an error message, non-printable bytes escaped.
        static func printable(_ line: ByteBuffer) -> String {
            var text = ""
            for byte in line.readableBytesView.prefix(40) {
                text += (0x20..<0x7F).contains(byte) ? String(UnicodeScalar(byte)) : "\\x" + String(byte, radix: 16)
            }
            return line.readableBytes > 40 ? text + "..." : text
        }
    }
}
