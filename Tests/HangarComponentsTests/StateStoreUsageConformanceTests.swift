import Foundation
import HangarComponents
import HangarPostgres
import HangarSQLite
import NIOCore
import Testing

/// Byte accounting per partition and byte limits, for every store. An item uses its physical key's UTF-8 bytes plus
/// its value's bytes; the numbers below are worked out by hand in the comments.
extension StateStoreConformanceTests {
    @Test("a key's partition is what comes before its first ||")
    func partitionOfKey() {
        #expect(StatePartition.separator == "||")
        #expect(StatePartition.of("tenant||app||key") == "tenant")
        #expect(StatePartition.of("tenant||") == "tenant")
        #expect(StatePartition.of("||key") == "")
        #expect(StatePartition.of("plain") == "plain")
        #expect(StatePartition.of("a|b|c") == "a|b|c")
        #expect(StatePartition.of("a|||b") == "a")
        #expect(StatePartition.of("é||clé") == "é")
        #expect(StatePartition.of("") == "")
    }

    @Test(
        "usage counts key and value bytes through sets, overwrites, deletes and transactions",
        arguments: StoreKind.countingBytes)
    func usageFollowsWrites(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            #expect(store.usageByPartition == [:])
            try await store.set(StateSetRequest(key: "a||k1", value: Data("hello".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["a": 10])  // 5 + 5
            try await store.set(StateSetRequest(key: "a||k1", value: Data("hi".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["a": 7])  // 5 + 2
            try await store.set(StateSetRequest(key: "a||k22", value: Data()), on: loop).get()
            try await store.set(StateSetRequest(key: "plain", value: Data("v".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["a": 13, "plain": 6])  // 7 + (6 + 0); 5 + 1

            try await store.transact(
                [
                    .set(StateSetRequest(key: "a||k3", value: Data("xyz".utf8))),  // a + 8
                    .delete(StateDeleteRequest(key: "a||k1")),  // a - 7
                    .set(StateSetRequest(key: "b||k", value: Data("1234".utf8))),  // b + 8
                    .set(StateSetRequest(key: "a||k3", value: Data("xy".utf8))),  // a - 1
                ], on: loop
            ).get()
            #expect(store.usageByPartition == ["a": 13, "b": 8, "plain": 6])

            try await store.delete(StateDeleteRequest(key: "nothing-here"), on: loop).get()
            try await store.delete(StateDeleteRequest(key: "a||k22"), on: loop).get()
            try await store.delete(StateDeleteRequest(key: "a||k3"), on: loop).get()
            #expect(store.usageByPartition == ["b": 8, "plain": 6], "an emptied partition is left out")

            // Bytes, not characters: é, ü and ß take two bytes each.
            try await store.set(StateSetRequest(key: "é||ü", value: Data("ß".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["b": 8, "plain": 6, "é": 8])

            // A transaction that fails on its last operation changes no count.
            await #expect(throws: StateStoreError.etagMismatch(key: "plain")) {
                try await store.transact(
                    [
                        .set(StateSetRequest(key: "b||new", value: Data("x".utf8))),
                        .delete(StateDeleteRequest(key: "é||ü")),
                        .set(StateSetRequest(key: "b||k", value: Data("123456789".utf8))),
                        .set(StateSetRequest(key: "plain", value: Data(), etag: kind.neverCurrentETag)),
                    ], on: loop
                ).get()
            }
            #expect(store.usageByPartition == ["b": 8, "plain": 6, "é": 8])
        }
    }

    @Test("a write over its byte limit is refused and changes nothing", arguments: StoreKind.countingBytes)
    func byteLimitRefusal(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "t||a", value: Data("12345".utf8)), on: loop).get()
            let original = try #require(try await store.get("t||a", on: loop).get())
            #expect(store.usageByPartition == ["t": 9])  // 4 + 5

            // A new item: 9 + (4 + 7) = 20 > 15.
            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 20, limit: 15)) {
                try await store.set(
                    StateSetRequest(key: "t||b", value: Data("1234567".utf8), byteLimit: 15), on: loop
                ).get()
            }
            #expect(try await store.get("t||b", on: loop).get() == nil)
            // Growing an item: 9 - 9 + (4 + 9) = 13 > 12.
            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 13, limit: 12)) {
                try await store.set(
                    StateSetRequest(key: "t||a", value: Data("123456789".utf8), byteLimit: 12), on: loop
                ).get()
            }
            #expect(try await store.get("t||a", on: loop).get() == original, "value and ETag unchanged")
            #expect(store.usageByPartition == ["t": 9])

            // Reaching the limit exactly is allowed.
            try await store.set(
                StateSetRequest(key: "t||a", value: Data("12345678".utf8), byteLimit: 12), on: loop
            ).get()
            let grown = try #require(try await store.get("t||a", on: loop).get())
            #expect(store.usageByPartition == ["t": 12])

            // In a transaction, the earlier operations count and are rolled back with it: 12 + 5 + 5 = 22 > 20.
            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 22, limit: 20)) {
                try await store.transact(
                    [
                        .set(StateSetRequest(key: "t||c", value: Data("x".utf8))),
                        .set(StateSetRequest(key: "u||d", value: Data("yy".utf8))),
                        .set(StateSetRequest(key: "t||e", value: Data("z".utf8), byteLimit: 20)),
                    ], on: loop
                ).get()
            }
            let after = try await Env.entries(["t||a", "t||c", "u||d", "t||e"], in: store, on: loop)
            #expect(after == [grown, nil, nil, nil])
            #expect(store.usageByPartition == ["t": 12])

            // An earlier delete makes room: 12 - 12 + (4 + 10) = 14.
            try await store.transact(
                [
                    .delete(StateDeleteRequest(key: "t||a")),
                    .set(StateSetRequest(key: "t||f", value: Data("0123456789".utf8), byteLimit: 14)),
                ], on: loop
            ).get()
            #expect(store.usageByPartition == ["t": 14])
        }
    }

    @Test("over its limit, a partition can still shrink, keep its size and delete", arguments: StoreKind.countingBytes)
    func overLimitShrinks(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "t||a", value: Data(repeating: 1, count: 20)), on: loop).get()
            try await store.set(StateSetRequest(key: "t||b", value: Data("1".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["t": 29])  // 24 + 5

            try await store.set(
                StateSetRequest(key: "t||a", value: Data(repeating: 2, count: 10), byteLimit: 5), on: loop
            ).get()
            #expect(store.usageByPartition == ["t": 19])
            try await store.set(
                StateSetRequest(key: "t||a", value: Data(repeating: 3, count: 10), byteLimit: 5), on: loop
            ).get()
            let same = try #require(try await store.get("t||a", on: loop).get())
            #expect(same.value == Data(repeating: 3, count: 10), "a write keeping the size passes")
            #expect(store.usageByPartition == ["t": 19])

            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 20, limit: 5)) {
                try await store.set(StateSetRequest(key: "t||b", value: Data("12".utf8), byteLimit: 5), on: loop).get()
            }
            // Shrinking first does not get the partition under 5, so the growing write still fails: 19 - 10 + 1.
            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 10, limit: 5)) {
                try await store.transact(
                    [
                        .set(StateSetRequest(key: "t||a", value: Data(), byteLimit: 5)),
                        .set(StateSetRequest(key: "t||b", value: Data("12".utf8), byteLimit: 5)),
                    ], on: loop
                ).get()
            }
            #expect(try await store.get("t||a", on: loop).get() == same)
            #expect(store.usageByPartition == ["t": 19])

            try await store.delete(StateDeleteRequest(key: "t||a"), on: loop).get()
            #expect(store.usageByPartition == ["t": 5])
            try await store.delete(StateDeleteRequest(key: "t||b"), on: loop).get()
            #expect(store.usageByPartition == [:])
        }
    }

    @Test("partitions are counted and limited independently", arguments: StoreKind.countingBytes)
    func independentPartitions(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            try await store.set(StateSetRequest(key: "a||x", value: Data("1234".utf8)), on: loop).get()
            try await store.set(StateSetRequest(key: "b||x", value: Data("1234".utf8), byteLimit: 8), on: loop).get()
            #expect(store.usageByPartition == ["a": 8, "b": 8])

            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "b", usage: 13, limit: 8)) {
                try await store.set(StateSetRequest(key: "b||y", value: Data("1".utf8), byteLimit: 8), on: loop).get()
            }
            try await store.set(StateSetRequest(key: "a||y", value: Data("1".utf8), byteLimit: 13), on: loop).get()
            // A key without `||` is its own partition's key.
            try await store.set(StateSetRequest(key: "a", value: Data("1".utf8), byteLimit: 15), on: loop).get()
            #expect(store.usageByPartition == ["a": 15, "b": 8])
            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "ab", usage: 2, limit: 0)) {
                try await store.set(StateSetRequest(key: "ab", value: Data(), byteLimit: 0), on: loop).get()
            }
            #expect(store.usageByPartition == ["a": 15, "b": 8])
        }
    }

    @Test("expired items count until they are removed", arguments: StoreKind.countingBytes)
    func expiredItemsCountUntilRemoved(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            let brief = Duration.seconds(1)
            try await store.set(StateSetRequest(key: "t||brief", value: Data("brief".utf8), ttl: brief), on: loop).get()
            try await store.set(StateSetRequest(key: "t||lasting", value: Data("lasting".utf8)), on: loop).get()
            try await store.set(
                StateSetRequest(key: "t||over", value: Data("0123456789".utf8), ttl: brief), on: loop
            ).get()
            try await store.set(StateSetRequest(key: "t||gone", value: Data("12345".utf8), ttl: brief), on: loop).get()
            try await store.set(StateSetRequest(key: "u||brief", value: Data("b".utf8), ttl: brief), on: loop).get()
            #expect(store.usageByPartition == ["t": 59, "u": 9])  // 13 + 17 + 17 + 12; 8 + 1

            try await Task.sleep(for: .milliseconds(1500))
            #expect(store.usageByPartition == ["t": 59, "u": 9], "expired but still present")

            // Writing over an expired item replaces what is physically there: 59 - 17 + (7 + 4).
            try await store.set(
                StateSetRequest(key: "t||over", value: Data("abcd".utf8), concurrency: .firstWrite), on: loop
            ).get()
            #expect(store.usageByPartition == ["t": 53, "u": 9])
            try await store.delete(StateDeleteRequest(key: "t||gone"), on: loop).get()
            #expect(store.usageByPartition == ["t": 41, "u": 9])

            #expect(try await Env.purgeExpired(store, on: loop) == 2)
            #expect(store.usageByPartition == ["t": 28])  // 17 + 11
            #expect(try await Env.purgeExpired(store, on: loop) == 0)
            #expect(store.usageByPartition == ["t": 28])
        }
    }

    @Test("a write over the limit first removes its partition's expired items", arguments: StoreKind.countingBytes)
    func refusalPurgesExpired(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            let brief = Duration.seconds(1)
            // Partition t: 3 + 16 expiring, 8 lasting. "t|x" and "t|}" are partitions of their own, and sort on
            // either side of the keys that start with "t||".
            let expiring = [("t", "ab"), ("t||old", "0123456789"), ("t|x", "ab"), ("t|}", "ab"), ("u||old", "ab")]
            for (key, value) in expiring {
                try await store.set(StateSetRequest(key: key, value: Data(value.utf8), ttl: brief), on: loop).get()
            }
            try await store.set(StateSetRequest(key: "t||keep", value: Data("k".utf8)), on: loop).get()
            #expect(store.usageByPartition == ["t": 27, "t|x": 5, "t|}": 5, "u": 8])

            try await Task.sleep(for: .milliseconds(1500))
            // 27 + 16 = 43 would exceed 30; without its expired items, t holds 8, and 8 + 16 = 24 fits.
            try await store.set(
                StateSetRequest(key: "t||new", value: Data("0123456789".utf8), byteLimit: 30), on: loop
            ).get()
            #expect(store.usageByPartition == ["t": 24, "t|x": 5, "t|}": 5, "u": 8])
            #expect(try await store.get("t||keep", on: loop).get()?.value == Data("k".utf8))

            await #expect(throws: StateStoreError.byteLimitExceeded(partition: "t", usage: 36, limit: 30)) {
                try await store.set(
                    StateSetRequest(key: "t||more", value: Data("12345".utf8), byteLimit: 30), on: loop
                ).get()
            }
            #expect(try await Env.purgeExpired(store, on: loop) == 3)
            #expect(store.usageByPartition == ["t": 24])
        }
    }

    /// Exact for the stores that serialise writes; PostgreSQL may overshoot by the writes committing at once (one
    /// per pooled connection, `PostgresStateStore`), which the other checks then allow.
    @Test("concurrent writers with a byte limit never take a partition above it", arguments: StoreKind.countingBytes)
    func concurrentLimit(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, _ in
            let slack = kind.limitsExactly ? 0 : (store as? PostgresStateStore).map { $0.backend.maxConnections - 2 } ?? 0
            let group = Env.group
            // Every item is 9 + 11 = 20 bytes: exactly 50 fit in 1000.
            let outcomes = try await withThrowingTaskGroup(of: (written: [String], refused: Int).self) { tasks in
                for writer in 0..<8 {
                    tasks.addTask {
                        let loop = group.next()
                        var written: [String] = []
                        var refused = 0
                        for index in 100..<120 {
                            let key = "c||t\(writer)i\(index)"
                            do {
                                try await store.set(
                                    StateSetRequest(key: key, value: Data("hello world".utf8), byteLimit: 1000),
                                    on: loop
                                ).get()
                                written.append(key)
                            } catch StateStoreError.byteLimitExceeded(let partition, let usage, let limit) {
                                #expect(partition == "c" && limit == 1000)
                                #expect(kind.limitsExactly ? usage == 1020 : usage > 1000 && usage <= 1020 + 20 * slack)
                                refused += 1
                            }
                        }
                        return (written, refused)
                    }
                }
                return try await tasks.reduce(into: [(written: [String], refused: Int)]()) { $0.append($1) }
            }
            let written = outcomes.flatMap(\.written)
            #expect((50...50 + slack).contains(written.count))
            #expect(outcomes.map(\.refused).reduce(0, +) == 160 - written.count)
            #expect(try await Env.settledUsage(store, on: group.next()) == ["c": 20 * written.count])
            let keys = (0..<8).flatMap { writer in (100..<120).map { "c||t\(writer)i\($0)" } }
            let present = try await Env.entries(keys, in: store, on: group.next())
            #expect(present.compactMap { $0 }.count == written.count)
        }
    }

    @Test("random operations keep usage equal to the bytes present and limits exact", arguments: StoreKind.countingBytes)
    func randomOperations(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            var model = UsageModel(seed: 0x5EED_0001, neverCurrentETag: kind.neverCurrentETag)
            try await model.run(400, on: store, loop: loop)
            #expect(model.refusals > 10, "the sequence exercises refusals")
            #expect(store.usageByPartition == model.usage)
        }
    }

    @Test(
        "executesInline tells whether outcomes are ready when the call returns (reads may be, on a blocking store)",
        arguments: StoreKind.countingBytes)
    func executesInline(kind: StoreKind) async throws {
        try await Env.withStore(kind) { store, loop in
            #expect(store.executesInline == (kind == .inMemory))
            let (outcomes, ready) = try await loop.submit {
                let outcomes: [Eventual<Void>] = [
                    store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop),
                    store.get("k", on: loop).map { _ in },
                    store.bulkGet(["k", "other"], on: loop).map { _ in },
                    store.transact([.delete(StateDeleteRequest(key: "k"))], on: loop),
                    store.delete(StateDeleteRequest(key: "k"), on: loop),
                ]
                // The writes: a blocking store answers them later; it may answer reads at once (state.sqlite's on
                // the event loop).
                let ready = [0, 3, 4].filter {
                    if case .ready = outcomes[$0] { true } else { false }
                }.count
                return (outcomes, ready)
            }.get()
            #expect(ready == (store.executesInline ? 3 : 0))
            for outcome in outcomes { try await outcome.get() }
        }
    }
}

/// A reference model of partition usage and byte limits, driving a store with a reproducible random sequence of
/// sets, deletes and transactions and checking each outcome against the model.
struct UsageModel {
    private var state: UInt64
    /// The bytes of each key present in the store, as the model expects.
    private(set) var items: [String: Int] = [:]
    private(set) var refusals = 0

    /// An ETag no item carries, in the store's form.
    private let neverCurrentETag: String

    init(seed: UInt64, items: [String: Int] = [:], neverCurrentETag: String = "999999999") {
        state = seed
        self.items = items
        self.neverCurrentETag = neverCurrentETag
    }

    /// Expected usage per partition, partitions holding nothing left out.
    var usage: [String: Int] {
        var usage: [String: Int] = [:]
        for (key, bytes) in items { usage[StatePartition.of(key), default: 0] += bytes }
        return usage.filter { $0.value > 0 }
    }

    private mutating func next(_ bound: Int) -> Int {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return Int(state % UInt64(bound))
    }

    private mutating func randomKey() -> String {
        let partition = ["a", "b", "ü", ""][next(4)]
        return next(8) == 0 ? "solo\(partition)" : "\(partition)||k\(next(6))"
    }

    private mutating func randomOperation() -> StateOperation {
        let key = randomKey()
        if next(4) == 0 { return .delete(StateDeleteRequest(key: key)) }
        let limit = next(3) == 0 ? nil : 40 + next(200)
        return .set(StateSetRequest(key: key, value: Data(repeating: 0x61, count: next(40)), byteLimit: limit))
    }

    /// Applies `operations` to the model, or returns the error the store must report.
    private func expected(_ operations: [StateOperation]) -> (items: [String: Int], error: StateStoreError?) {
        var items = self.items
        for operation in operations {
            switch operation {
            case .set(let request):
                if request.etag != nil { return (self.items, .etagMismatch(key: request.key)) }
                let bytes = request.key.utf8.count + request.value.count
                let delta = bytes - (items[request.key] ?? 0)
                let partition = StatePartition.of(request.key)
                let after = items.filter { StatePartition.of($0.key) == partition }.values.reduce(0, +) + delta
                if let limit = request.byteLimit, delta > 0, after > limit {
                    return (self.items, .byteLimitExceeded(partition: partition, usage: after, limit: limit))
                }
                items[request.key] = bytes
            case .delete(let request):
                items[request.key] = nil
            }
        }
        return (items, nil)
    }

    mutating func run(_ count: Int, on store: any TransactionalStateStore, loop: any EventLoop) async throws {
        for _ in 0..<count {
            var operations = (0..<(next(3) == 0 ? 2 + next(3) : 1)).map { _ in randomOperation() }
            if operations.count > 1, next(5) == 0, case .set(var last) = operations.removeLast() {
                last.etag = neverCurrentETag  // Never current: the transaction fails on its last operation.
                operations.append(.set(last))
            }
            let (items, error) = expected(operations)
            do {
                if operations.count == 1, case .set(let request) = operations[0] {
                    try await store.set(request, on: loop).get()
                } else if operations.count == 1, case .delete(let request) = operations[0] {
                    try await store.delete(request, on: loop).get()
                } else {
                    try await store.transact(operations, on: loop).get()
                }
                #expect(error == nil, "\(operations)")
            } catch let failure as StateStoreError {
                #expect(failure == error, "\(operations)")
            }
            if case .byteLimitExceeded = error { refusals += 1 }
            self.items = items
            #expect(store.usageByPartition == usage)
        }
    }
}
