package import NIOCore

/// Writes commands as Redis reads them: an array of bulk strings (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per
/// argument), which every server version accepts and which is binary safe, so keys and values are never escaped.
package enum RESPEncoder {
    /// Appends one command, `arguments[0]` being its name, to `buffer`.
    package static func writeCommand(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "*"))
        writeDecimal(arguments.count, into: &buffer)
        for argument in arguments {
            buffer.writeInteger(UInt8(ascii: "$"))
            switch argument {
            case .bytes(let bytes):
                writeDecimal(bytes.readableBytes, into: &buffer)
                var bytes = bytes
                buffer.writeBuffer(&bytes)
            case .string(let text):
                writeDecimal(text.utf8.count, into: &buffer)
                buffer.writeString(text)
            case .integer(let value):
                let text = String(value)
                writeDecimal(text.utf8.count, into: &buffer)
                buffer.writeString(text)
            }
            buffer.writeStaticString("\r\n")
        }
    }

    /// About the bytes `writeCommand` writes for `arguments` (exact for short ones), so that its buffer is allocated
    /// once.
    package static func estimatedSize(_ arguments: [RESPArgument]) -> Int {
        var size = 16
        for argument in arguments {
            switch argument {
            case .bytes(let bytes): size += bytes.readableBytes + 16
            case .string(let text): size += text.utf8.count + 16
            case .integer: size += 36
            }
        }
        return size
    }

    /// `value` in decimal followed by CRLF, without making a String.
    static func writeDecimal(_ value: Int, into buffer: inout ByteBuffer) {
        precondition(value >= 0, "RESP lengths are not negative")
        var digits = 1
        var rest = value / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        let start = buffer.writerIndex
        buffer.writeRepeatingByte(0, count: digits)
        rest = value
        for position in stride(from: start + digits - 1, through: start, by: -1) {
            buffer.setInteger(UInt8(ascii: "0") + UInt8(rest % 10), at: position)
            rest /= 10
        }
        buffer.writeStaticString("\r\n")
    }
}

/// One argument of a command.
package enum RESPArgument: Sendable, Hashable, ExpressibleByStringLiteral {
    case bytes(ByteBuffer)
    case string(String)
    case integer(Int64)

    package init(stringLiteral value: String) { self = .string(value) }
}
