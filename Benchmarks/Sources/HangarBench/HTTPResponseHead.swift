/// The head of an HTTP/1.1 response as the bench client reads it: the status, the body's length and whether the
/// server closes the connection after it. Only `content-length` bodies are read (Hangar's HTTP API sends every
/// body with one); a chunked response is refused.
struct HTTPResponseHead {
    var status: Int
    /// Bytes from the status line to the blank line that ends the headers, inclusive.
    var length: Int
    var contentLength: Int
    var closesConnection: Bool

    /// The head at the start of `bytes`, or nil when its end has not arrived yet.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(HTTPCallError) -> HTTPResponseHead? {
        guard let end = headEnd(bytes) else { return nil }
        // "HTTP/1.1 200 OK": the status is the three digits after the first space.
        guard end >= 12, matches(bytes, 0, 5, "http/"), bytes[8] == UInt8(ascii: " "),
            let status = decimal(bytes, 9, 12)
        else {
            throw .protocolViolation("not an HTTP/1.x status line")
        }
        var head = HTTPResponseHead(status: status, length: end + 4, contentLength: -1, closesConnection: false)
        // Header lines run from after the status line to `end`, where the last one's CRLF is.
        var line = (lineEnd(bytes, from: 0, limit: end + 2) ?? end) + 2
        while line < end {
            let lineStop = lineEnd(bytes, from: line, limit: end + 2) ?? end
            if let colon = (line..<lineStop).first(where: { bytes[$0] == UInt8(ascii: ":") }) {
                var valueStart = colon + 1
                while valueStart < lineStop, bytes[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
                if matches(bytes, line, colon, "content-length") {
                    head.contentLength = decimal(bytes, valueStart, lineStop) ?? -1
                } else if matches(bytes, line, colon, "transfer-encoding") {
                    throw .protocolViolation("an encoded (chunked) body; the bench reads content-length bodies only")
                } else if matches(bytes, line, colon, "connection") {
                    head.closesConnection = matches(bytes, valueStart, lineStop, "close")
                }
            }
            line = lineStop + 2
        }
        // No body for informational, 204 and 304 responses, whatever the headers say.
        if status < 200 || status == 204 || status == 304 {
            head.contentLength = 0
        } else if head.contentLength < 0 {
            throw .protocolViolation("a response without content-length")
        }
        return head
    }

    /// The offset of the `\r\n\r\n` that ends the head.
    private static func headEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var index = 0
        while index + 3 < bytes.count {
            if bytes[index + 3] != UInt8(ascii: "\n") {
                index += 1
            } else if bytes[index] == UInt8(ascii: "\r") && bytes[index + 1] == UInt8(ascii: "\n")
                && bytes[index + 2] == UInt8(ascii: "\r")
            {
                return index
            } else {
                index += 1
            }
        }
        return nil
    }

    /// The offset of the next `\r\n` from `start`, before `limit`.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int, limit: Int) -> Int? {
        var index = start
        while index + 1 < limit {
            if bytes[index] == UInt8(ascii: "\r") && bytes[index + 1] == UInt8(ascii: "\n") { return index }
            index += 1
        }
        return nil
    }

    /// Whether `bytes[start..<end]` is `lowercased`, ignoring ASCII case.
    private static func matches(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int, _ lowercased: String) -> Bool
    {
        guard end - start == lowercased.utf8.count else { return false }
        return zip(bytes[start..<end], lowercased.utf8).allSatisfy { byte, expected in
            let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
            return folded == expected
        }
    }

    /// The decimal number in `bytes[start..<end]`, trailing spaces allowed.
    private static func decimal(_ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Int? {
        var value = 0
        var digits = 0
        for index in start..<end {
            let byte = bytes[index]
            if byte == UInt8(ascii: " ") && digits > 0 { break }
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), digits < 18 else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            digits += 1
        }
        return digits > 0 ? value : nil
    }
}
