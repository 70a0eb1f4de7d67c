import NIOCore
import NIOHPACK

/// HTTP/2's wire format (RFC 9113 §4, §6, §7) as the gRPC server reads and writes it.
enum HTTP2Wire {
    /// The client connection preface that precedes the client's first SETTINGS frame.
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let frameHeaderBytes = 9
    /// SETTINGS_MAX_FRAME_SIZE's initial value: the largest frame payload either side sends until told otherwise.
    static let defaultMaxFrameSize = 16_384
    static let defaultWindow = 65_535
    static let maxWindow = Int(Int32.max)

    enum FrameType {
        static let data: UInt8 = 0x0
        static let headers: UInt8 = 0x1
        static let priority: UInt8 = 0x2
        static let rstStream: UInt8 = 0x3
        static let settings: UInt8 = 0x4
        static let pushPromise: UInt8 = 0x5
        static let ping: UInt8 = 0x6
        static let goAway: UInt8 = 0x7
        static let windowUpdate: UInt8 = 0x8
        static let continuation: UInt8 = 0x9
    }

    enum Flag {
        static let endStream: UInt8 = 0x1
        static let ack: UInt8 = 0x1
        static let endHeaders: UInt8 = 0x4
        static let padded: UInt8 = 0x8
        static let priority: UInt8 = 0x20
    }

    enum Setting {
        static let headerTableSize: UInt16 = 0x1
        static let enablePush: UInt16 = 0x2
        static let maxConcurrentStreams: UInt16 = 0x3
        static let initialWindowSize: UInt16 = 0x4
        static let maxFrameSize: UInt16 = 0x5
        static let maxHeaderListSize: UInt16 = 0x6
    }

    /// Error codes for RST_STREAM and GOAWAY (RFC 9113 §7).
    struct ErrorCode: Equatable, Sendable, CustomStringConvertible {
        let rawValue: UInt32

        static let noError = ErrorCode(rawValue: 0x0)
        static let protocolError = ErrorCode(rawValue: 0x1)
        static let internalError = ErrorCode(rawValue: 0x2)
        static let flowControlError = ErrorCode(rawValue: 0x3)
        static let streamClosed = ErrorCode(rawValue: 0x5)
        static let frameSizeError = ErrorCode(rawValue: 0x6)
        static let refusedStream = ErrorCode(rawValue: 0x7)
        static let cancel = ErrorCode(rawValue: 0x8)
        static let compressionError = ErrorCode(rawValue: 0x9)
        static let enhanceYourCalm = ErrorCode(rawValue: 0xB)

        var description: String {
            switch rawValue {
            case 0x0: "NO_ERROR"
            case 0x1: "PROTOCOL_ERROR"
            case 0x2: "INTERNAL_ERROR"
            case 0x3: "FLOW_CONTROL_ERROR"
            case 0x5: "STREAM_CLOSED"
            case 0x6: "FRAME_SIZE_ERROR"
            case 0x7: "REFUSED_STREAM"
            case 0x8: "CANCEL"
            case 0x9: "COMPRESSION_ERROR"
            case 0xB: "ENHANCE_YOUR_CALM"
            default: "error 0x\(String(rawValue, radix: 16))"
            }
        }
    }

    /// A frame's 9-byte header.
    struct FrameHeader {
        var length: Int
        var type: UInt8
        var flags: UInt8
        var stream: UInt32

        /// Reads a header when 9 bytes are readable, without consuming them.
        static func peek(_ buffer: ByteBuffer) -> FrameHeader? {
            guard buffer.readableBytes >= HTTP2Wire.frameHeaderBytes else { return nil }
            return buffer.withUnsafeReadableBytes { bytes in
                FrameHeader(
                    length: Int(bytes[0]) << 16 | Int(bytes[1]) << 8 | Int(bytes[2]),
                    type: bytes[3], flags: bytes[4],
                    stream: (UInt32(bytes[5]) << 24 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 8
                        | UInt32(bytes[8])) & 0x7FFF_FFFF)
            }
        }
    }
}

extension ByteBuffer {
    /// Appends a frame header.
    mutating func writeHTTP2FrameHeader(length: Int, type: UInt8, flags: UInt8, stream: UInt32) {
        writeInteger(UInt8(truncatingIfNeeded: length >> 16))
        writeInteger(UInt16(truncatingIfNeeded: length))
        writeInteger(type)
        writeInteger(flags)
        writeInteger(stream & 0x7FFF_FFFF)
    }
}

/// Header blocks as the server encodes them: every field a literal without indexing (RFC 7541 §6.2.2), so the
/// encoder has no dynamic table and no state to keep in step with the peer, whatever SETTINGS_HEADER_TABLE_SIZE it
/// sets. A few `:status` values and `content-type` use the static table.
enum HPACKLiteral {
    /// `:status: 200`, `content-type: application/grpc`: the head of every gRPC response.
    static let grpcResponseHead: [UInt8] = {
        var bytes: [UInt8] = [0x88]  // indexed field 8, ":status: 200"
        bytes.append(contentsOf: [0x0F, 0x10])  // literal without indexing, name index 31 (content-type)
        appendString("application/grpc", to: &bytes)
        return bytes
    }()

    /// `grpc-status: 0`: the trailers of every successful call.
    static let grpcOKTrailers: [UInt8] = encode([("grpc-status", "0")])

    /// Encodes fields in order. Names must be lower case, as HTTP/2 requires.
    static func encode(_ fields: some Sequence<(String, String)>) -> [UInt8] {
        var bytes: [UInt8] = []
        for (name, value) in fields {
            if name == ":status", let index = statusIndex[value] {
                bytes.append(0x80 | index)
                continue
            }
            bytes.append(0x00)  // literal without indexing, new name
            appendString(name, to: &bytes)
            appendString(value, to: &bytes)
        }
        return bytes
    }

    static func encode(_ headers: HPACKHeaders) -> [UInt8] {
        encode(headers.lazy.map { ($0.name, $0.value) })
    }

    /// Static-table entries for `:status` (RFC 7541 Appendix A).
    private static let statusIndex: [String: UInt8] = [
        "200": 8, "204": 9, "206": 10, "304": 11, "400": 12, "404": 13, "500": 14,
    ]

    /// A string literal without Huffman coding: a 7-bit-prefix length, then the bytes.
    private static func appendString(_ string: String, to bytes: inout [UInt8]) {
        appendInteger(string.utf8.count, prefixBits: 7, firstByte: 0x00, to: &bytes)
        bytes.append(contentsOf: string.utf8)
    }

    /// RFC 7541 §5.1.
    static func appendInteger(_ value: Int, prefixBits: Int, firstByte: UInt8, to bytes: inout [UInt8]) {
        let limit = (1 << prefixBits) - 1
        guard value >= limit else {
            bytes.append(firstByte | UInt8(value))
            return
        }
        bytes.append(firstByte | UInt8(limit))
        var rest = value - limit
        while rest >= 0x80 {
            bytes.append(UInt8(rest & 0x7F) | 0x80)
            rest >>= 7
        }
        bytes.append(UInt8(rest))
    }
}
