import Foundation

/// Makes state ETags opaque per tenant. A store's ETags come from one counter shared by every tenant of the
/// store, so a tenant comparing the ETags of its own successive writes could count the writes of every other
/// tenant. The sealer maps each ETag through a keyed pseudo-random permutation of 64-bit numbers (a 4-round
/// Feistel network with SipHash-2-4 as its round function), with a key per tenant derived from a node secret:
/// what a tenant sees is unique and stable per write, but says nothing about the counter behind it. Incoming ETags
/// are mapped back before the store checks them.
///
/// The node secret lives in `<data-dir>/etag.key` (created on first start, mode 0600), so ETags survive restarts.
package struct ETagSealer: Sendable {
    private let key: (UInt64, UInt64)

    package init(secret: [UInt8]) {
        precondition(secret.count >= 16, "the ETag secret needs at least 16 bytes")
        let first = secret[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        let second = secret[8..<16].enumerated().reduce(UInt64(0)) {
            $0 | UInt64($1.element) << (8 * UInt64($1.offset))
        }
        key = (first, second)
    }

    /// Loads the node's secret from `directory/etag.key`, creating it with random bytes the first time.
    package static func load(directory: String) throws -> ETagSealer {
        let path = (directory as NSString).appendingPathComponent("etag.key")
        if let data = FileManager.default.contents(atPath: path), data.count >= 16 {
            return ETagSealer(secret: Array(data))
        }
        var secret = [UInt8](repeating: 0, count: 32)
        for index in secret.indices { secret[index] = UInt8.random(in: .min ... .max) }
        guard FileManager.default.createFile(atPath: path, contents: Data(secret), attributes: [.posixPermissions: 0o600])
        else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path]) }
        return ETagSealer(secret: secret)
    }

    /// The ETag a tenant sees for a store's ETag. ETags that are not 64-bit decimal numbers pass unchanged.
    package func seal(_ etag: String, namespace: String) -> String {
        guard let value = UInt64(etag) else { return etag }
        return String(permute(value, tenantKey(namespace), inverse: false))
    }

    /// The store's ETag for one a tenant sent. Anything that is not a 64-bit decimal number passes unchanged (the
    /// store then refuses it as invalid).
    package func unseal(_ etag: String, namespace: String) -> String {
        guard let value = UInt64(etag) else { return etag }
        return String(permute(value, tenantKey(namespace), inverse: true))
    }

    private func tenantKey(_ namespace: String) -> (UInt64, UInt64) {
        var first = SipHash(key: key)
        var second = SipHash(key: key)
        for byte in namespace.utf8 {
            first.append(byte)
            second.append(byte)
        }
        first.append(0x01)
        second.append(0x02)
        return (first.finish(), second.finish())
    }

    private func permute(_ value: UInt64, _ key: (UInt64, UInt64), inverse: Bool) -> UInt64 {
        var left = UInt32(truncatingIfNeeded: value >> 32)
        var right = UInt32(truncatingIfNeeded: value)
        func round(_ index: UInt8, _ half: UInt32) -> UInt32 {
            var hash = SipHash(key: key)
            hash.append(index)
            for shift in stride(from: 0, to: 32, by: 8) { hash.append(UInt8(truncatingIfNeeded: half >> shift)) }
            return UInt32(truncatingIfNeeded: hash.finish())
        }
        if inverse {
            for index in (0..<4).reversed() {
                (left, right) = (right ^ round(UInt8(index), left), left)
            }
        } else {
            for index in 0..<4 {
                (left, right) = (right, left ^ round(UInt8(index), right))
            }
        }
        return UInt64(left) << 32 | UInt64(right)
    }
}

/// SipHash-2-4 (Aumasson and Bernstein), a keyed pseudo-random function on short inputs, fed byte by byte so that
/// hashing allocates nothing.
struct SipHash {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    private var block: UInt64 = 0
    private var count = 0

    init(key: (UInt64, UInt64)) {
        v0 = 0x736f_6d65_7073_6575 ^ key.0
        v1 = 0x646f_7261_6e64_6f6d ^ key.1
        v2 = 0x6c79_6765_6e65_7261 ^ key.0
        v3 = 0x7465_6462_7974_6573 ^ key.1
    }

    static func hash(_ key: (UInt64, UInt64), _ message: [UInt8]) -> UInt64 {
        var hash = SipHash(key: key)
        for byte in message { hash.append(byte) }
        return hash.finish()
    }

    mutating func append(_ byte: UInt8) {
        block |= UInt64(byte) << (8 * UInt64(count & 7))
        count += 1
        if count & 7 == 0 {
            compress(block)
            block = 0
        }
    }

    consuming func finish() -> UInt64 {
        compress(block | UInt64(count & 0xff) << 56)
        v2 ^= 0xff
        for _ in 0..<4 { round() }
        return v0 ^ v1 ^ v2 ^ v3
    }

    private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    private mutating func round() {
        v0 &+= v1
        v1 = v1.rotateLeft(13) ^ v0
        v0 = v0.rotateLeft(32)
        v2 &+= v3
        v3 = v3.rotateLeft(16) ^ v2
        v0 &+= v3
        v3 = v3.rotateLeft(21) ^ v0
        v2 &+= v1
        v1 = v1.rotateLeft(17) ^ v2
        v2 = v2.rotateLeft(32)
    }
}

extension UInt64 {
    fileprivate func rotateLeft(_ count: UInt64) -> UInt64 { self << count | self >> (64 - count) }
}
