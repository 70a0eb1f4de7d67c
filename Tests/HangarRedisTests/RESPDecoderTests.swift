import NIOCore
import NIOEmbedded
import Testing

@testable import HangarRedis

/// The RESP decoder: every RESP2 and RESP3 type, frames split at every byte, bad frames refused with a clear error,
/// and a seeded fuzz of mutated and truncated frames (never a crash, a hang or an unbounded allocation).
@Suite("RESP decoder")
struct RESPDecoderTests {
    func decodeAll(_ text: String, limits: RESPDecoder.Limits = .init()) throws -> [RESPValue] {
        try decodeAll(Array(text.utf8), limits: limits)
    }

    func decodeAll(_ bytes: [UInt8], limits: RESPDecoder.Limits = .init()) throws -> [RESPValue] {
        var decoder = RESPDecoder(limits: limits)
        var buffer = ByteBuffer(bytes: bytes)
        var values: [RESPValue] = []
        while let value = try decoder.decode(buffer: &buffer) { values.append(value) }
        #expect(buffer.readableBytes == 0, "bytes left over")
        return values
    }

    static func bytes(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    static let cases: [(String, RESPValue)] = [
        ("+OK\r\n", .simpleString(bytes("OK"))),
        ("-ERR unknown command 'HELLO'\r\n", .error(bytes("ERR unknown command 'HELLO'"))),
        (":0\r\n", .integer(0)),
        (":-9223372036854775808\r\n", .integer(.min)),
        (":9223372036854775807\r\n", .integer(.max)),
        ("$5\r\nhe\r\no\r\n", .bulkString(bytes("he\r\no"))),
        ("$0\r\n\r\n", .bulkString(bytes(""))),
        ("$-1\r\n", .null),
        ("*-1\r\n", .null),
        ("_\r\n", .null),
        ("*0\r\n", .array([])),
        ("*2\r\n$1\r\na\r\n:1\r\n", .array([.bulkString(bytes("a")), .integer(1)])),
        (",1.5\r\n", .double(1.5)),
        (",-2e3\r\n", .double(-2000)),
        (",inf\r\n", .double(.infinity)),
        (",-inf\r\n", .double(-.infinity)),
        ("#t\r\n", .boolean(true)),
        ("#f\r\n", .boolean(false)),
        ("!21\r\nSYNTAX invalid syntax\r\n", .error(bytes("SYNTAX invalid syntax"))),
        ("=15\r\ntxt:Some string\r\n", .verbatimString(format: "txt", bytes("Some string"))),
        ("(3492890328409238509324850943850943825024385\r\n", .bigNumber("3492890328409238509324850943850943825024385")),
        ("(-1\r\n", .bigNumber("-1")),
        (
            "%2\r\n+first\r\n:1\r\n+second\r\n_\r\n",
            .map([.init(.simpleString(bytes("first")), .integer(1)), .init(.simpleString(bytes("second")), .null)])
        ),
        ("~2\r\n+a\r\n#f\r\n", .set([.simpleString(bytes("a")), .boolean(false)])),
        (
            ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            .push([.bulkString(bytes("message")), .bulkString(bytes("ch")), .bulkString(bytes("hi"))])
        ),
        // An attribute is dropped; the value it annotates is returned, at the top level and inside an aggregate.
        ("|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2\r\n", .array([.integer(2)])),
        ("*2\r\n|1\r\n+ttl\r\n:3600\r\n:1\r\n:2\r\n", .array([.integer(1), .integer(2)])),
    ]

    @Test("every RESP2 and RESP3 type decodes", arguments: cases.indices)
    func everyType(index: Int) throws {
        let (wire, expected) = Self.cases[index]
        #expect(try decodeAll(wire) == [expected])
    }

    @Test("NaN decodes as a double")
    func nan() throws {
        let values = try decodeAll(",nan\r\n")
        guard case .double(let value)? = values.first else {
            Issue.record("not a double: \(values)")
            return
        }
        #expect(value.isNaN)
    }

    @Test("a frame split at any byte decodes only once it is whole, and the same", arguments: cases.indices)
    func splitAtEveryByte(index: Int) throws {
        let (wire, expected) = Self.cases[index]
        let bytes = Array(wire.utf8)
        for split in 1..<bytes.count {
            var decoder = RESPDecoder()
            var buffer = ByteBuffer(bytes: bytes[..<split])
            #expect(try decoder.decode(buffer: &buffer) == nil, "decoded from \(split) of \(bytes.count) bytes")
            #expect(buffer.readerIndex == 0, "consumed part of an incomplete frame")
            buffer.writeBytes(bytes[split...])
            #expect(try decoder.decode(buffer: &buffer) == expected)
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("pipelined replies come out one by one, in order")
    func pipelined() throws {
        let wire = Self.cases.map(\.0).joined()
        let values = try decodeAll(wire)
        #expect(values.count == Self.cases.count)
        #expect(values == Self.cases.map(\.1))
    }

    @Test(
        "bad frames are refused with a clear error",
        arguments: [
            ("?\r\n", "unknown type byte"),
            (":12a\r\n", "not a valid integer"),
            (":\r\n", "empty integer"),
            (":99999999999999999999\r\n", "overflows"),
            ("$-2\r\n", "negative length"),
            ("$3\r\nabcd\r\n", "not followed by CRLF"),
            ("$?\r\n", "streamed"),
            ("*?\r\n", "streamed"),
            ("+OK\n", "LF without CR"),
            ("+OK\rX", "CR without LF"),
            ("#x\r\n", "neither t nor f"),
            (",1.5x\r\n", "not a double"),
            (",\r\n", "not a double"),
            ("(12.5\r\n", "not a big number"),
            ("_x\r\n", "null carries data"),
            ("=2\r\nab\r\n", "shorter than its format"),
            ("=5\r\ntxtxy\r\n", "no ':'"),
            ("~-1\r\n", "negative length"),
            ("%-1\r\n", "negative length"),
        ])
    func badFrames(wire: String, reason: String) {
        let error = #expect(throws: RESPProtocolError.self) { try decodeAll(wire) }
        #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
    }

    @Test("sizes beyond the limits are refused before anything is allocated for them")
    func limits() {
        var limits = RESPDecoder.Limits()
        limits.maxBulkBytes = 10
        limits.maxElements = 3
        limits.maxDepth = 2
        limits.maxLineBytes = 24
        for (wire, reason) in [
            ("$11\r\n", "more than the limit of 10"),
            ("*4\r\n", "more than the limit of 3"),
            ("%4\r\n", "more than the limit of 3"),
            ("*1\r\n*1\r\n*1\r\n*0\r\n", "deeper than 2"),
            ("+123456789012345678901234567", "longer than 24 bytes"),
            ("*9223372036854775807\r\n", "more than the limit"),
        ] {
            let error = #expect(throws: RESPProtocolError.self) { try decodeAll(wire, limits: limits) }
            #expect(error?.description.contains(reason) == true, "\(wire): \(String(describing: error))")
        }
    }

    @Test("a connection that closes in the middle of a reply is an error; between replies it is not")
    func endOfStream() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
        try channel.writeInbound(ByteBuffer(string: "+OK\r\n$5\r\nab"))
        #expect(try channel.readInbound(as: RESPValue.self) == .simpleString(ByteBuffer(string: "OK")))
        #expect(try channel.readInbound(as: RESPValue.self) == nil)
        #expect(throws: RESPProtocolError.self) { try channel.finish() }

        let clean = EmbeddedChannel(handler: ByteToMessageHandler(RESPDecoder()))
        try clean.writeInbound(ByteBuffer(string: ":1\r\n"))
        #expect(try clean.readInbound(as: RESPValue.self) == .integer(1))
        #expect(try clean.finish().isClean)
    }

    /// A small deterministic generator (SplitMix64), so a failing fuzz case can be replayed from its seed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A random value and its wire form.
    static func randomValue(_ random: inout SplitMix, depth: Int = 0) -> (RESPValue, String) {
        let kind = Int.random(in: 0..<(depth > 3 ? 8 : 12), using: &random)
        func text() -> String {
            String(
                (0..<Int.random(in: 0..<12, using: &random)).map { _ in "abc\r\n:$*%_ é".randomElement(using: &random)!
                })
        }
        switch kind {
        case 0:
            let word = String(
                (0..<Int.random(in: 0..<8, using: &random)).map { _ in "abcXYZ 09".randomElement(using: &random)! })
            return (.simpleString(ByteBuffer(string: word)), "+\(word)\r\n")
        case 1: return (.error(ByteBuffer(string: "ERR x")), "-ERR x\r\n")
        case 2:
            let value = Int64.random(in: .min ... .max, using: &random)
            return (.integer(value), ":\(value)\r\n")
        case 3:
            let value = text()
            return (.bulkString(ByteBuffer(string: value)), "$\(value.utf8.count)\r\n\(value)\r\n")
        case 4: return (.null, ["_\r\n", "$-1\r\n", "*-1\r\n"].randomElement(using: &random)!)
        case 5:
            let value = Bool.random(using: &random)
            return (.boolean(value), value ? "#t\r\n" : "#f\r\n")
        case 6:
            let value = Double(Int.random(in: -1000...1000, using: &random)) / 8
            return (.double(value), ",\(value)\r\n")
        case 7:
            let value = text()
            return (
                .verbatimString(format: "txt", ByteBuffer(string: value)),
                "=\(value.utf8.count + 4)\r\ntxt:\(value)\r\n"
            )
        default:
            let count = Int.random(in: 0..<4, using: &random)
            var items: [RESPValue] = []
            var wire = ""
            for _ in 0..<(kind == 11 ? count * 2 : count) {
                let (value, text) = randomValue(&random, depth: depth + 1)
                items.append(value)
                wire += text
            }
            switch kind {
            case 8: return (.array(items), "*\(count)\r\n" + wire)
            case 9: return (.set(items), "~\(count)\r\n" + wire)
            case 10: return (.push(items), ">\(count)\r\n" + wire)
            default:
                let pairs = stride(from: 0, to: items.count, by: 2).map { RESPValue.Pair(items[$0], items[$0 + 1]) }
                return (.map(pairs), "%\(count)\r\n" + wire)
            }
        }
    }

    @Test("fuzz: random values fed in random pieces decode to themselves", arguments: 0..<8)
    func randomRoundTrips(seed: Int) throws {
        var random = SplitMix(state: UInt64(seed) &* 7919)
        for _ in 0..<200 {
            let frames = (0..<Int.random(in: 1...4, using: &random)).map { _ in Self.randomValue(&random) }
            let bytes = Array(frames.map(\.1).joined().utf8)
            var decoder = RESPDecoder()
            var buffer = ByteBuffer()
            var decoded: [RESPValue] = []
            var index = 0
            while index < bytes.count {
                let step = Int.random(in: 1...max(1, bytes.count / 3), using: &random)
                buffer.writeBytes(bytes[index..<min(bytes.count, index + step)])
                index += step
                while let value = try decoder.decode(buffer: &buffer) { decoded.append(value) }
            }
            #expect(decoded == frames.map(\.0), "seed \(seed)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("fuzz: mutated and truncated frames give a value, a wait or a clear error, never a crash", arguments: 0..<8)
    func mutations(seed: Int) {
        var random = SplitMix(state: UInt64(seed) &* 104_729 &+ 1)
        var limits = RESPDecoder.Limits()
        limits.maxBulkBytes = 1 << 16
        limits.maxElements = 1 << 10
        for _ in 0..<2_000 {
            var bytes = Array(Self.randomValue(&random).1.utf8)
            for _ in 0..<Int.random(in: 1...4, using: &random) where !bytes.isEmpty {
                let at = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<4, using: &random) {
                case 0: bytes[at] = UInt8.random(in: 0...255, using: &random)
                case 1: bytes.remove(at: at)
                case 2: bytes.insert(Array("\r\n*$%:-9?".utf8).randomElement(using: &random)!, at: at)
                default: bytes.removeLast(Int.random(in: 0...bytes.count - at - 1, using: &random))
                }
            }
            var decoder = RESPDecoder(limits: limits)
            var buffer = ByteBuffer(bytes: bytes)
            do {
                while buffer.readableBytes > 0, try decoder.decode(buffer: &buffer) != nil {}
            } catch is RESPProtocolError {
                continue
            } catch {
                Issue.record("an error that is not a RESPProtocolError: \(error)")
            }
        }
    }
}
