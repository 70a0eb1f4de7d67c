import Foundation
import HangarComponents
import HangarSQLite
import NIOCore
import Testing

/// Behaviour specific to `SQLiteStateStore`: persistence, ETags across restarts, expiry and configuration.
@Suite("SQLite state store")
struct SQLiteStateStoreTests {
    typealias Env = StateTestEnvironment

    @Test("data survives closing and reopening the file, in a directory created on demand")
    func reopen() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("nested/deeper/state.db").path
        let loop = Env.group.next()

        let store = try Env.openSQLite(path: path, tableName: "tenant_state")
        try await store.set(StateSetRequest(key: "k", value: Data("persisted".utf8)), on: loop).get()
        try await store.set(StateSetRequest(key: "ttl", value: Data("t".utf8), ttl: .seconds(3600)), on: loop).get()
        let written = try #require(try await store.get("k", on: loop).get())
        let withTTL = try #require(try await store.get("ttl", on: loop).get())
        try await store.close(on: loop).get()
        #expect(FileManager.default.fileExists(atPath: path))

        let reopened = try Env.openSQLite(path: path, tableName: "tenant_state")
        #expect(try await reopened.get("k", on: loop).get() == written)
        #expect(try await reopened.get("ttl", on: loop).get() == withTTL)
        try await reopened.set(StateSetRequest(key: "k", value: Data("again".utf8), etag: written.etag), on: loop).get()
        try await reopened.close(on: loop).get()

        let otherTable = try Env.openSQLite(path: path, tableName: "other")
        #expect(try await otherTable.get("k", on: loop).get() == nil, "each table is a separate store")
        try await otherTable.close(on: loop).get()
    }

    @Test("ETags are never reused, even after deletions and a restart")
    func etagsNeverReused() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        let loop = Env.group.next()

        var seen: [UInt64] = []
        let store = try Env.openSQLite(path: path)
        for round in 0..<3 {
            for key in ["a", "b", "c"] {
                try await store.set(StateSetRequest(key: key, value: Data("\(round)".utf8)), on: loop).get()
                let etag = try #require(try await store.get(key, on: loop).get()).etag
                seen.append(try #require(StateETag.version(etag)))
            }
        }
        #expect(Set(seen).count == seen.count)
        for key in ["a", "b", "c"] {
            try await store.delete(StateDeleteRequest(key: key), on: loop).get()
        }
        try await store.set(StateSetRequest(key: "a", value: Data()), on: loop).get()
        let recreated = try #require(try await store.get("a", on: loop).get())
        let afterDelete = try #require(StateETag.version(recreated.etag))
        #expect(afterDelete > seen.max()!)
        seen.append(afterDelete)
        try await store.delete(StateDeleteRequest(key: "a"), on: loop).get()
        try await store.close(on: loop).get()

        let reopened = try Env.openSQLite(path: path)
        try await reopened.set(StateSetRequest(key: "z", value: Data()), on: loop).get()
        let afterRestart = try #require(try await reopened.get("z", on: loop).get()).etag
        #expect(try #require(StateETag.version(afterRestart)) > seen.max()!)
        try await reopened.close(on: loop).get()
    }

    @Test("purgeExpired deletes expired rows and only those")
    func purgeExpired() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = Env.group.next()
        let store = try Env.openSQLite(path: directory.appendingPathComponent("state.db").path)

        // The first purge runs before they expire unless the machine is so busy that this task waited 2 s for a
        // thread: then it may take them, and the two purges must still add up to exactly them.
        let written = ContinuousClock.now
        try await store.set(StateSetRequest(key: "a", value: Data(), ttl: .seconds(2)), on: loop).get()
        try await store.set(StateSetRequest(key: "b", value: Data(), ttl: .seconds(2)), on: loop).get()
        try await store.set(StateSetRequest(key: "c", value: Data(), ttl: .seconds(3600)), on: loop).get()
        try await store.set(StateSetRequest(key: "d", value: Data()), on: loop).get()
        let setsDone = ContinuousClock.now
        let first = try await store.purgeExpired(on: loop).get()
        if ContinuousClock.now - written < .milliseconds(1900) { #expect(first == 0) }

        try await Task.sleep(until: setsDone + .milliseconds(2200))
        #expect(try await first + store.purgeExpired(on: loop).get() == 2)
        #expect(try await store.purgeExpired(on: loop).get() == 0)
        let remaining = try await Env.entries(["a", "b", "c", "d"], in: store, on: loop)
        #expect(remaining.map { $0 != nil } == [false, false, true, true])

        try await store.close(on: loop).get()
        await #expect(throws: StateStoreError.closed) { try await store.purgeExpired(on: loop).get() }
    }

    @Test("the periodic cleanup deletes expired rows on its own")
    func periodicCleanup() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = Env.group.next()
        let store = try Env.openSQLite(
            path: directory.appendingPathComponent("state.db").path, cleanupInterval: .milliseconds(200))

        // A TTL long enough that even a loaded machine checks the usage before the row expires.
        let written = ContinuousClock.now
        try await store.set(StateSetRequest(key: "a", value: Data(), ttl: .seconds(3)), on: loop).get()
        try await store.set(StateSetRequest(key: "b", value: Data()), on: loop).get()
        let usage = store.usageByPartition
        // Unless this task waited 3 s for a thread, in which case the cleanup may have run already.
        if ContinuousClock.now - written < .milliseconds(2900) { #expect(usage == ["a": 1, "b": 1]) }
        // The row expires after 3 s and the cleanup runs every 200 ms; a busy machine may delay it, so wait for it
        // (up to 15 s) rather than for a fixed time.
        let deadline = ContinuousClock.now + .seconds(15)
        while store.usageByPartition != ["b": 1], ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(store.usageByPartition == ["b": 1], "the cleanup subtracts what it deletes")
        #expect(try await store.purgeExpired(on: loop).get() == 0, "the cleanup has already removed the row")
        #expect(try await store.get("b", on: loop).get() != nil)
        try await store.close(on: loop).get()
    }

    @Test(
        "an invalid table name is refused at init",
        arguments: [
            "", "1state", "state-v2", "state v2", "state;DROP TABLE x", "\"q\"", "état",
            String(repeating: "t", count: 64),
        ]
    )
    func invalidTableName(name: String) throws {
        #expect(throws: SQLiteStateStore.ConfigurationError.invalidTableName(name)) {
            try Env.openSQLite(path: ":memory:", tableName: name)
        }
    }

    @Test(
        "unusual but valid table names are accepted",
        arguments: ["_", "select", "T_9", String(repeating: "t", count: 63)])
    func validTableName(name: String) async throws {
        let store = try Env.openSQLite(path: ":memory:", tableName: name)
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
        #expect(try await store.get("k", on: loop).get()?.value == Data("v".utf8))
        try await store.close(on: loop).get()
    }
}
