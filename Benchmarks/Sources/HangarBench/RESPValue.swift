import NIOCore

/// A Redis reply (RESP2), as much of it as the Redis Streams anchor reads (`RedisStreamCommand`): simple strings,
/// errors, integers, bulk strings and arrays, either of the last two possibly null. There is no Swift Redis client
/// among the project's dependencies, and the anchor needs three commands, so the bench speaks the protocol itself.
enum RESPValue: Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk(ByteBuffer?)
    case array([RESPValue]?)

    /// A command as Redis reads it: an array of bulk strings.
    static func command(_ arguments: [String]) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            buffer.writeString("$\(argument.utf8.count)\r\n")
            buffer.writeString(argument)
            buffer.writeString("\r\n")
        }
        return buffer
    }

    /// Reads one complete reply from the front of `buffer`; nil (and `buffer` unchanged) when it is not all there
    /// yet. Fails on bytes that are not RESP.
    static func read(from buffer: inout ByteBuffer) throws -> RESPValue? {
        let start = buffer.readerIndex
        guard let value = try parse(&buffer) else {
            buffer.moveReaderIndex(to: start)
            return nil
        }
        return value
    }

    private static func parse(_ buffer: inout ByteBuffer) throws -> RESPValue? {
        guard let kind = buffer.readInteger(as: UInt8.self), let line = readLine(&buffer) else { return nil }
        switch kind {
        case UInt8(ascii: "+"): return .simple(line)
        case UInt8(ascii: "-"): return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int(line) else { throw BenchError("RESP: integer '\(line)'") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line) else { throw BenchError("RESP: bulk length '\(line)'") }
            if length < 0 { return .bulk(nil) }
            guard buffer.readableBytes >= length + 2, let bytes = buffer.readSlice(length: length) else { return nil }
            buffer.moveReaderIndex(forwardBy: 2)
            return .bulk(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(line) else { throw BenchError("RESP: array length '\(line)'") }
            if count < 0 { return .array(nil) }
            var elements: [RESPValue] = []
            elements.reserveCapacity(count)
            for _ in 0..<count {
                guard let element = try parse(&buffer) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw BenchError("RESP: unknown reply type \(kind)")
        }
    }

    /// The text up to CRLF, which is consumed; nil when no CRLF has arrived yet.
    private static func readLine(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: UInt8(ascii: "\r")), cr + 1 < view.endIndex,
            view[cr + 1] == UInt8(ascii: "\n")
        else { return nil }
        let line = buffer.readString(length: cr - view.startIndex)
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }
}
