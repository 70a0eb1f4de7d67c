import Foundation
import HangarComponents
import NIOCore
import Testing

/// Behaviour specific to `InMemoryStateStore`: when expired items leave the byte count.
@Suite("In-memory state store")
struct InMemoryStateStoreTests {
    typealias Env = StateTestEnvironment

    @Test("reading an expired item removes it and its bytes")
    func readRemovesExpired() async throws {
        let store = InMemoryStateStore()
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "t||a", value: Data("1".utf8), ttl: .seconds(1)), on: loop).get()
        try await store.set(StateSetRequest(key: "t||b", value: Data("22".utf8)), on: loop).get()
        #expect(store.usageByPartition == ["t": 11])
        try await Task.sleep(for: .milliseconds(1200))
        #expect(store.usageByPartition == ["t": 11])
        #expect(try await store.get("t||a", on: loop).get() == nil)
        #expect(store.usageByPartition == ["t": 6])
        #expect(store.count == 1)
        try await store.close(on: loop).get()
        #expect(store.usageByPartition == [:], "closing drops the data")
    }

    @Test("every 1024 writes, expired items are swept and stop counting")
    func sweepEvery1024Writes() async throws {
        let store = InMemoryStateStore()
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "t||a", value: Data("1".utf8), ttl: .seconds(1)), on: loop).get()
        try await Task.sleep(for: .milliseconds(1200))
        for _ in 0..<1022 {
            try await store.set(StateSetRequest(key: "u||k", value: Data("1".utf8)), on: loop).get()
        }
        #expect(store.usageByPartition == ["t": 5, "u": 5])
        try await store.set(StateSetRequest(key: "u||k", value: Data("1".utf8)), on: loop).get()
        #expect(store.usageByPartition == ["u": 5])
        try await store.close(on: loop).get()
    }
}
