@_spi(Benchmarks) import HangarGRPC
import NIOCore

/// `GRPCMessageDeframer` fed in chunks, checked against a reading of the whole input at once: the same messages in
/// the same order whatever the chunks, a failure exactly where the reference fails, nothing lost or made up.
enum DeframerFuzz {
    /// Input: one byte of options (low 7 bits: the message limit in units of 8 bytes; high bit: messages keep their
    /// prefix), one byte for the chunk size (0: one chunk), then the stream's bytes.
    static func run(_ input: ArraySlice<UInt8>) {
        var input = input
        let options = input.popFirst() ?? 0
        let size = input.popFirst() ?? 0
        let limit = Int(options & 0x7F) * 8
        let keepsPrefix = options & 0x80 != 0

        var expected: [ArraySlice<UInt8>] = []
        var expectedFailure = false
        var offset = input.startIndex
        while input.endIndex - offset >= 5 {
            let length = input[(offset + 1)..<(offset + 5)].reduce(0) { $0 << 8 | Int($1) }
            if input[offset] != 0 || length > limit {
                expectedFailure = true
                break
            }
            guard input.endIndex - offset - 5 >= length else { break }
            expected.append(input[(keepsPrefix ? offset : offset + 5)..<(offset + 5 + length)])
            offset += 5 + length
        }

        var deframer = GRPCMessageDeframer(maxMessageBytes: limit)
        deframer.keepsPrefix = keepsPrefix
        var messages: [[UInt8]] = []
        var failed = false
        for chunk in chunked(input, size: size) {
            do {
                messages += try deframer.append(ByteBuffer(bytes: chunk)).map { Array($0.readableBytesView) }
            } catch {
                failed = true
                break
            }
        }
        precondition(failed == expectedFailure, "the deframer failed: \(failed), the reference: \(expectedFailure)")
        // A failure drops the messages completed in the same append (the call ends with an error anyway).
        precondition(messages.count <= expected.count, "\(messages.count) messages, the reference \(expected.count)")
        if !failed {
            precondition(
                messages.count == expected.count, "\(messages.count) messages, the reference \(expected.count)")
            precondition(
                deframer.hasPartialMessage == (offset < input.endIndex), "a partial message is lost or made up")
        }
        for (message, reference) in zip(messages, expected) {
            precondition(message.elementsEqual(reference), "a message differs from the reference")
        }
    }
}
