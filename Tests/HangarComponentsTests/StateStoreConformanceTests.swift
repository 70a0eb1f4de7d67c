import Foundation
import HangarComponents
import HangarSQLite
import NIOCore
import Testing

/// Behaviour every state store must show, whatever its backend (components-contrib's state conformance tests).
@Suite("State store conformance")
struct StateStoreConformanceTests {
    typealias Env = StateTestEnvironment

    @Test("set, get and delete round-trip a value, with a new ETag on every write", arguments: StoreKind.allCases)
    func roundTrip(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("one".utf8)), on: loop).get()
            let first = try #require(try await store.get("k", on: loop).get())
            #expect(first.value == Data("one".utf8))
            #expect(kind.etagIsUUID ? UUID(uuidString: first.etag) != nil : StateETag.version(first.etag) != nil)
            #expect(first.expiresAt == nil)

            try await store.set(StateSetRequest(key: "k", value: Data("two".utf8)), on: loop).get()
            let second = try #require(try await store.get("k", on: loop).get())
            #expect(second.value == Data("two".utf8))
            #expect(second.etag != first.etag)

            try await store.set(StateSetRequest(key: "k", value: Data("two".utf8)), on: loop).get()
            let third = try #require(try await store.get("k", on: loop).get())
            #expect(third.etag != second.etag, "rewriting the same value still changes the ETag")

            try await store.delete(StateDeleteRequest(key: "k"), on: loop).get()
            #expect(try await store.get("k", on: loop).get() == nil)
        }
    }

    @Test("a missing key reads as nil", arguments: StoreKind.allCases)
    func missingKey(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            let entry = try await store.get("nothing-here", on: loop).get()
            #expect(entry == nil)
        }
    }

    @Test("deleting a missing key succeeds", arguments: StoreKind.allCases)
    func deleteMissing(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.delete(StateDeleteRequest(key: "nothing-here"), on: loop).get()
            try await store.delete(StateDeleteRequest(key: "nothing-here", concurrency: .firstWrite), on: loop).get()
            #expect(try await store.get("nothing-here", on: loop).get() == nil)
        }
    }

    @Test("bulkGet answers in the order asked, with nil for missing keys", arguments: StoreKind.allCases)
    func bulkGetOrder(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            for key in ["a", "b", "c"] {
                try await store.set(StateSetRequest(key: key, value: Data("value of \(key)".utf8)), on: loop).get()
            }
            let results = try await store.bulkGet(["c", "missing", "a", "b", "a"], on: loop).get()
            let values = try results.map { try $0.get().map { String(decoding: $0.value, as: UTF8.self) } }
            #expect(values == ["value of c", nil, "value of a", "value of b", "value of a"])
            let etagOfA = try #require(try await store.get("a", on: loop).get()).etag
            #expect(try results[2].get()?.etag == etagOfA)
            #expect(try await store.bulkGet([], on: loop).get().isEmpty)
        }
    }

    @Test("an unspecified write with the current ETag succeeds", arguments: StoreKind.allCases)
    func matchingETag(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("1".utf8)), on: loop).get()
            let current = try #require(try await store.get("k", on: loop).get())
            try await store.set(StateSetRequest(key: "k", value: Data("2".utf8), etag: current.etag), on: loop).get()
            let updated = try #require(try await store.get("k", on: loop).get())
            #expect(updated.value == Data("2".utf8))
            #expect(updated.etag != current.etag)
            try await store.delete(StateDeleteRequest(key: "k", etag: updated.etag), on: loop).get()
            #expect(try await store.get("k", on: loop).get() == nil)
        }
    }

    @Test("a write with a stale ETag is refused and changes nothing", arguments: StoreKind.allCases)
    func staleETag(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("1".utf8)), on: loop).get()
            let stale = try #require(try await store.get("k", on: loop).get()).etag
            try await store.set(StateSetRequest(key: "k", value: Data("2".utf8)), on: loop).get()
            let current = try #require(try await store.get("k", on: loop).get())

            for concurrency in [StateConcurrency.unspecified, .firstWrite] {
                await #expect(throws: StateStoreError.etagMismatch(key: "k")) {
                    try await store.set(
                        StateSetRequest(key: "k", value: Data("3".utf8), etag: stale, concurrency: concurrency),
                        on: loop
                    ).get()
                }
            }
            await #expect(throws: StateStoreError.etagMismatch(key: "absent")) {
                try await store.set(StateSetRequest(key: "absent", value: Data(), etag: stale), on: loop).get()
            }
            #expect(try await store.get("k", on: loop).get() == current)
            #expect(try await store.get("absent", on: loop).get() == nil)
        }
    }

    @Test("a malformed ETag is refused, an empty one counts as none", arguments: StoreKind.allCases)
    func malformedETag(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("1".utf8)), on: loop).get()
            let current = try #require(try await store.get("k", on: loop).get())

            await #expect(throws: StateStoreError.invalidETag(key: "k", etag: "abc")) {
                try await store.set(StateSetRequest(key: "k", value: Data("2".utf8), etag: "abc"), on: loop).get()
            }
            await #expect(throws: StateStoreError.invalidETag(key: "k", etag: "abc")) {
                try await store.delete(StateDeleteRequest(key: "k", etag: "abc"), on: loop).get()
            }
            #expect(try await store.get("k", on: loop).get() == current)

            try await store.set(StateSetRequest(key: "k", value: Data("2".utf8), etag: ""), on: loop).get()
            #expect(try await store.get("k", on: loop).get()?.value == Data("2".utf8))
            try await store.delete(StateDeleteRequest(key: "k", etag: ""), on: loop).get()
            #expect(try await store.get("k", on: loop).get() == nil)
        }
    }

    @Test(
        "first-write without an ETag fails on an existing key and succeeds on a new one", arguments: StoreKind.allCases)
    func firstWrite(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(
                StateSetRequest(key: "k", value: Data("first".utf8), concurrency: .firstWrite), on: loop
            ).get()
            let written = try #require(try await store.get("k", on: loop).get())
            #expect(written.value == Data("first".utf8))

            await #expect(throws: StateStoreError.etagMismatch(key: "k")) {
                try await store.set(
                    StateSetRequest(key: "k", value: Data("second".utf8), concurrency: .firstWrite), on: loop
                ).get()
            }
            #expect(try await store.get("k", on: loop).get() == written)

            try await store.set(
                StateSetRequest(key: "k", value: Data("second".utf8), etag: written.etag, concurrency: .firstWrite),
                on: loop
            ).get()
            #expect(try await store.get("k", on: loop).get()?.value == Data("second".utf8))
        }
    }

    @Test("last-write ignores a stale ETag", arguments: StoreKind.allCases)
    func lastWrite(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("1".utf8)), on: loop).get()
            let stale = try #require(try await store.get("k", on: loop).get()).etag
            try await store.set(StateSetRequest(key: "k", value: Data("2".utf8)), on: loop).get()

            try await store.set(
                StateSetRequest(key: "k", value: Data("3".utf8), etag: stale, concurrency: .lastWrite), on: loop
            ).get()
            #expect(try await store.get("k", on: loop).get()?.value == Data("3".utf8))
            try await store.delete(StateDeleteRequest(key: "k", etag: stale, concurrency: .lastWrite), on: loop).get()
            #expect(try await store.get("k", on: loop).get() == nil)
        }
    }

    @Test("deleting with a stale ETag is refused and keeps the item", arguments: StoreKind.allCases)
    func deleteStaleETag(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("1".utf8)), on: loop).get()
            let stale = try #require(try await store.get("k", on: loop).get()).etag
            try await store.set(StateSetRequest(key: "k", value: Data("2".utf8)), on: loop).get()
            let current = try #require(try await store.get("k", on: loop).get())

            await #expect(throws: StateStoreError.etagMismatch(key: "k")) {
                try await store.delete(StateDeleteRequest(key: "k", etag: stale), on: loop).get()
            }
            await #expect(throws: StateStoreError.etagMismatch(key: "absent")) {
                try await store.delete(StateDeleteRequest(key: "absent", etag: stale), on: loop).get()
            }
            #expect(try await store.get("k", on: loop).get() == current)
        }
    }

    @Test("a transaction applies all its operations", arguments: StoreKind.allCases)
    func transactionApplies(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "old", value: Data("old".utf8)), on: loop).get()
            let old = try #require(try await store.get("old", on: loop).get())

            try await store.transact(
                [
                    .set(StateSetRequest(key: "a", value: Data("A".utf8))),
                    .set(StateSetRequest(key: "b", value: Data("B".utf8), concurrency: .firstWrite)),
                    .delete(StateDeleteRequest(key: "old", etag: old.etag)),
                    .set(StateSetRequest(key: "a", value: Data("A2".utf8))),
                ], on: loop
            ).get()

            let results = try await Env.entries(["a", "b", "old"], in: store, on: loop)
            #expect(results.map { $0?.value } == [Data("A2".utf8), Data("B".utf8), nil])
            let etags = results.compactMap { $0?.etag }
            #expect(etags.count == 2 && etags.allSatisfy { !$0.isEmpty })
            if kind.etagsAreStoreWide {
                #expect(Set(etags + [old.etag]).count == 3, "every write of the transaction has its own ETag")
            }
        }
    }

    @Test("a transaction whose last operation fails writes nothing", arguments: StoreKind.allCases)
    func transactionRollsBack(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "kept", value: Data("kept".utf8)), on: loop).get()
            try await store.set(StateSetRequest(key: "doomed", value: Data("doomed".utf8)), on: loop).get()
            try await store.set(StateSetRequest(key: "guarded", value: Data("1".utf8)), on: loop).get()
            let stale = try #require(try await store.get("guarded", on: loop).get()).etag
            try await store.set(StateSetRequest(key: "guarded", value: Data("2".utf8)), on: loop).get()
            let before = try await Env.entries(["kept", "doomed", "guarded", "new"], in: store, on: loop)

            await #expect(throws: StateStoreError.etagMismatch(key: "guarded")) {
                try await store.transact(
                    [
                        .set(StateSetRequest(key: "new", value: Data("new".utf8))),
                        .set(StateSetRequest(key: "kept", value: Data("changed".utf8))),
                        .delete(StateDeleteRequest(key: "doomed")),
                        .set(StateSetRequest(key: "guarded", value: Data("3".utf8), etag: stale)),
                    ], on: loop
                ).get()
            }

            let after = try await Env.entries(["kept", "doomed", "guarded", "new"], in: store, on: loop)
            #expect(after == before)
            #expect(after[3] == nil)
            #expect(after[0]?.value == Data("kept".utf8))
        }
    }

    @Test("an item with a TTL expires, one without stays", arguments: StoreKind.allCases)
    func ttl(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            let start = Date()
            try await store.set(
                // 2 s, so that it is still there when read back even on a machine busy with other tests.
                StateSetRequest(key: "brief", value: Data("brief".utf8), ttl: .seconds(2)), on: loop
            ).get()
            try await store.set(StateSetRequest(key: "lasting", value: Data("lasting".utf8)), on: loop).get()

            let brief = try #require(try await store.get("brief", on: loop).get())
            #expect(brief.value == Data("brief".utf8))
            let expiresAt = try #require(brief.expiresAt)
            #expect(expiresAt > start && expiresAt <= Date().addingTimeInterval(2.01))

            try await Task.sleep(for: .milliseconds(2500))
            #expect(try await store.get("brief", on: loop).get() == nil)
            #expect(try await store.get("lasting", on: loop).get()?.value == Data("lasting".utf8))
            let bulk = try await Env.entries(["brief", "lasting"], in: store, on: loop)
            #expect(bulk.map { $0?.value } == [nil, Data("lasting".utf8)])

            // An expired item counts as absent for writes too.
            try await store.set(
                StateSetRequest(key: "brief", value: Data("again".utf8), concurrency: .firstWrite), on: loop
            ).get()
            #expect(try await store.get("brief", on: loop).get()?.expiresAt == nil)
        }
    }

    @Test("a 1 MiB value and an empty value round-trip byte-exact", arguments: StoreKind.allCases)
    func largeAndEmptyValues(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            // Every byte value, in an order that no run of zeroes or simple repetition would reproduce.
            var large = Data(count: 1 << 20)
            large.withUnsafeMutableBytes { bytes in
                var state: UInt64 = 0x9E37_79B9_7F4A_7C15
                for index in bytes.indices {
                    state ^= state << 13
                    state ^= state >> 7
                    state ^= state << 17
                    bytes[index] = UInt8(truncatingIfNeeded: state)
                }
            }
            try await store.set(StateSetRequest(key: "large", value: large), on: loop).get()
            try await store.set(StateSetRequest(key: "empty", value: Data()), on: loop).get()
            #expect(try await store.get("large", on: loop).get()?.value == large)
            #expect(try await store.get("empty", on: loop).get()?.value == Data())
        }
    }

    @Test("concurrent writers retrying on mismatch lose no increment", arguments: StoreKind.allCases)
    func concurrentIncrements(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, _ in
            let group = Env.group
            try await store.set(StateSetRequest(key: "counter", value: Data("0".utf8)), on: group.next()).get()
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for _ in 0..<8 {
                    tasks.addTask {
                        let loop = group.next()
                        var done = 0
                        while done < 25 {
                            let entry = try #require(try await store.get("counter", on: loop).get())
                            let value = try #require(Int(String(decoding: entry.value, as: UTF8.self)))
                            do {
                                try await store.set(
                                    StateSetRequest(
                                        key: "counter", value: Data(String(value + 1).utf8), etag: entry.etag),
                                    on: loop
                                ).get()
                                done += 1
                            } catch StateStoreError.etagMismatch {
                                continue
                            }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
            let final = try #require(try await store.get("counter", on: group.next()).get())
            #expect(String(decoding: final.value, as: UTF8.self) == "200")
        }
    }

    @Test("the features advertised are ETags, transactions and TTLs", arguments: StoreKind.allCases)
    func features(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, _ in
            #expect(store.features == [.etag, .transactional, .ttl])
            #expect(store.features.daprNames == ["ETAG", "TRANSACTIONAL", "TTL"])
        }
    }

    @Test("after close every operation fails with closed", arguments: StoreKind.allCases)
    func closed(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
            try await store.close(on: loop).get()

            await #expect(throws: StateStoreError.closed) { try await store.get("k", on: loop).get() }
            await #expect(throws: StateStoreError.closed) {
                try await store.set(StateSetRequest(key: "k", value: Data()), on: loop).get()
            }
            await #expect(throws: StateStoreError.closed) {
                try await store.delete(StateDeleteRequest(key: "k"), on: loop).get()
            }
            await #expect(throws: StateStoreError.closed) {
                try await store.transact([.delete(StateDeleteRequest(key: "k"))], on: loop).get()
            }
            let bulk = try await store.bulkGet(["k", "other"], on: loop).get()
            #expect(bulk.count == 2)
            for result in bulk {
                #expect(throws: StateStoreError.closed) { try result.get() }
            }
        }
    }
}
