import Foundation
import Testing

@testable import HangarRuntime

@Suite("Opaque ETags per tenant")
struct ETagSealerTests {
    let sealer = ETagSealer(secret: Array(0..<32))

    @Test("SipHash-2-4 matches the reference test vector")
    func sipHashVector() {
        // The paper's vector: key 00..0f, message 00..0e.
        let key: (UInt64, UInt64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)
        #expect(SipHash.hash(key, Array(0..<15)) == 0xa129_ca61_49be_45e5)
        #expect(SipHash.hash(key, []) == 0x726f_db47_dd0e_0e31)
    }

    @Test("sealing is a permutation: every ETag comes back, per tenant")
    func roundTrip() {
        for value in [0, 1, 2, 41, 1_000_000, UInt64.max - 1, UInt64.max] {
            for tenant in ["team-a", "team-b"] {
                let sealed = sealer.seal(String(value), namespace: tenant)
                #expect(UInt64(sealed) != nil)
                #expect(sealer.unseal(sealed, namespace: tenant) == String(value))
            }
        }
        #expect(sealer.seal("not-a-number", namespace: "team-a") == "not-a-number")
        #expect(sealer.unseal("", namespace: "team-a") == "")
    }

    @Test("consecutive store ETags look unrelated, and differ between tenants")
    func opaque() {
        let a = (1...200).map { sealer.seal(String($0), namespace: "team-a") }
        let b = (1...200).map { sealer.seal(String($0), namespace: "team-b") }
        #expect(Set(a).count == 200)
        #expect(Set(a).isDisjoint(with: b))
        // No order or spacing survives: the sealed values are not increasing.
        let increasing = zip(a, a.dropFirst()).filter { UInt64($0)! < UInt64($1)! }.count
        #expect(increasing > 50 && increasing < 150)
        // A different node secret gives different ETags.
        let other = ETagSealer(secret: Array(repeating: 7, count: 32))
        #expect(other.seal("1", namespace: "team-a") != a[0])
    }

    @Test("the node secret is created once and read back")
    func secretFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("etag-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let first = try ETagSealer.load(directory: directory)
        let second = try ETagSealer.load(directory: directory)
        #expect(first.seal("5", namespace: "x") == second.seal("5", namespace: "x"))
        let attributes = try FileManager.default.attributesOfItem(atPath: directory + "/etag.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }
}
