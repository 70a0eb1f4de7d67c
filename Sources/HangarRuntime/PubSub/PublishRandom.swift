#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import HangarSync

/// The random bits of a publish (the envelope's UUIDv4 id, the span's ids), drawn from a buffer the kernel's CSPRNG
/// fills 256 bytes a call: a publish needs 40 bytes, and a system call for each 8 of them (as
/// `SystemRandomNumberGenerator` makes) cost more than the rest of the envelope. The bytes are the kernel's, used
/// once each, so they are as unpredictable as drawn one call at a time.
enum PublishRandom {
    private struct Pool {
        var bytes = [UInt8](repeating: 0, count: 1024)
        /// The next unused byte; `bytes.count` when the pool must be refilled.
        var next = 1024

        mutating func take(_ count: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
            if next + count > bytes.count {
                bytes.withUnsafeMutableBytes { PublishRandom.fill($0) }
                next = 0
            }
            bytes.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[next..<(next + count)])) }
            next += count
        }
    }

    private static let pool = Locked(Pool())

    /// The next 8 random bytes of the pool.
    static func next() -> UInt64 {
        pool.withLock { pool in
            var value: UInt64 = 0
            pool.take(8) { value = $0.loadUnaligned(as: UInt64.self) }
            return value
        }
    }

    /// Fills `buffer` from the kernel (`getentropy`, at most 256 bytes a call), or from
    /// `SystemRandomNumberGenerator` where that fails.
    private static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var filled = 0
        while filled < buffer.count {
            let count = min(256, buffer.count - filled)
            guard getentropy(buffer.baseAddress! + filled, count) == 0 else { break }
            filled += count
        }
        while filled < buffer.count {
            withUnsafeBytes(of: UInt64.random(in: .min ... .max)) { word in
                let count = min(word.count, buffer.count - filled)
                buffer.baseAddress!.advanced(by: filled).copyMemory(from: word.baseAddress!, byteCount: count)
                filled += count
            }
        }
    }

    /// Writes a new random (version 4, RFC 9562) UUID in lowercase with dashes, as Go's `uuid.NewString()`.
    static func writeUUIDv4(into out: inout [UInt8]) {
        var bytes: (UInt64, UInt64) = (0, 0)
        pool.withLock { pool in
            pool.take(16) { source in
                withUnsafeMutableBytes(of: &bytes) { $0.copyMemory(from: source) }
            }
        }
        withUnsafeMutableBytes(of: &bytes) { uuid in
            uuid[6] = uuid[6] & 0x0F | 0x40  // version 4
            uuid[8] = uuid[8] & 0x3F | 0x80  // variant 10
            let digits: StaticString = "0123456789abcdef"
            digits.withUTF8Buffer { digits in
                for index in 0..<16 {
                    if index == 4 || index == 6 || index == 8 || index == 10 { out.append(UInt8(ascii: "-")) }
                    out.append(digits[Int(uuid[index] >> 4)])
                    out.append(digits[Int(uuid[index] & 0xF)])
                }
            }
        }
    }
}
