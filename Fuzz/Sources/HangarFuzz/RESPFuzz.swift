import HangarRedis
import NIOCore

/// `RESPDecoder` fed a server's bytes in chunks (as `ByteToMessageHandler` does: the bytes so far, decoded until it
/// needs more), checked against decoding them at once: the same values, and a failure where that one fails.
enum RESPFuzz {
    /// Small limits, so that the fuzzer reaches them.
    static let limits: RESPDecoder.Limits = {
        var limits = RESPDecoder.Limits()
        limits.maxBulkBytes = 64 * 1024
        limits.maxElements = 4096
        limits.maxDepth = 16
        limits.maxLineBytes = 1024
        return limits
    }()

    /// Input: one byte for the chunk size (0: one chunk), then the bytes.
    static func run(_ input: ArraySlice<UInt8>) {
        var input = input
        let size = input.popFirst() ?? 0
        let (expected, expectedFailure) = decode(chunked(input, size: 0))
        let (values, failed) = decode(chunked(input, size: size))
        precondition(failed == expectedFailure, "chunked: failed \(failed); at once: failed \(expectedFailure)")
        precondition(values == expected, "chunked: \(values); at once: \(expected)")
    }

    static func decode(_ chunks: [ArraySlice<UInt8>]) -> ([RESPValue], Bool) {
        var decoder = RESPDecoder(limits: limits)
        var buffer = ByteBuffer()
        var values: [RESPValue] = []
        for chunk in chunks {
            buffer.writeBytes(chunk)
            do {
                while let value = try decoder.decode(buffer: &buffer) { values.append(value) }
            } catch {
                return (values, true)
            }
        }
        return (values, false)
    }
}
