import NIOCore
import Testing

@testable import HangarRedis

@Suite("RESP encoder")
struct RESPEncoderTests {
    @Test("a command is an array of bulk strings, binary safe")
    func command() {
        var buffer = ByteBuffer()
        RESPEncoder.writeCommand(
            ["SET", .bytes(ByteBuffer(bytes: [0x00, 0x0D, 0x0A, 0xFF])), .string("héllo"), .integer(-42)],
            into: &buffer)
        #expect(
            Array(buffer.readableBytesView)
                == Array("*4\r\n$3\r\nSET\r\n$4\r\n".utf8) + [0x00, 0x0D, 0x0A, 0xFF]
                + Array("\r\n$6\r\nhéllo\r\n$3\r\n-42\r\n".utf8))
    }

    @Test("what the encoder writes, the decoder reads back as the same strings")
    func roundTrip() throws {
        var buffer = ByteBuffer()
        let arguments: [RESPArgument] = [
            "XADD", "orders", "*", .string(String(repeating: "x", count: 100_000)), .integer(0),
        ]
        RESPEncoder.writeCommand(arguments, into: &buffer)
        var decoder = RESPDecoder()
        let value = try decoder.decode(buffer: &buffer)
        #expect(value?.elements?.map(\.string) == ["XADD", "orders", "*", String(repeating: "x", count: 100_000), "0"])
    }

    @Test(
        "lengths of every magnitude are written in decimal", arguments: [0, 7, 10, 99, 1234, Int(Int32.max), Int.max])
    func decimals(value: Int) {
        var buffer = ByteBuffer()
        RESPEncoder.writeDecimal(value, into: &buffer)
        #expect(String(buffer: buffer) == "\(value)\r\n")
    }
}
