import Foundation
import HangarComponents
@testable import HangarSQLite
import NIOCore
import Testing

/// Byte accounting specific to `SQLiteStateStore`: computed from the table on open, committed with transactions.
extension SQLiteStateStoreTests {
    @Test("usage is the same after closing and reopening the file")
    func usageAfterReopen() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        let loop = Env.group.next()

        let store = try Env.openSQLite(path: path)
        let items = [
            ("a||k", "12345"), ("a||ttl", "1"), ("é||clé", "ß"), ("plain", ""), ("||k", "v"), ("a|b||c", "v"),
        ]
        for (key, value) in items {
            let ttl: Duration? = key == "a||ttl" ? .seconds(3600) : nil
            try await store.set(StateSetRequest(key: key, value: Data(value.utf8), ttl: ttl), on: loop).get()
        }
        // 4 + 5 + 6 + 1; 8 + 2; 5; 3 + 1; 6 + 1: keys and values in bytes, partitions as `StatePartition.of`.
        let expected = ["a": 16, "é": 10, "plain": 5, "": 4, "a|b": 7]
        #expect(store.usageByPartition == expected)
        try await store.close(on: loop).get()

        let reopened = try Env.openSQLite(path: path)
        #expect(reopened.usageByPartition == expected)
        var model = UsageModel(
            seed: 0xC0FF_EE01,
            items: Dictionary(uniqueKeysWithValues: items.map { ($0.0, $0.0.utf8.count + $0.1.utf8.count) }))
        try await model.run(200, on: reopened, loop: loop)
        let written = reopened.usageByPartition
        #expect(written == model.usage)
        try await reopened.close(on: loop).get()

        let again = try Env.openSQLite(path: path)
        #expect(again.usageByPartition == written)
        try await again.close(on: loop).get()

        let otherTable = try Env.openSQLite(path: path, tableName: "other")
        #expect(otherTable.usageByPartition == [:], "each table is counted separately")
        try await otherTable.close(on: loop).get()
    }

    @Test("expired rows count after a reopen until they are purged")
    func expiredRowsAfterReopen() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        let loop = Env.group.next()

        let store = try Env.openSQLite(path: path)
        try await store.set(StateSetRequest(key: "t||a", value: Data("1".utf8), ttl: .seconds(1)), on: loop).get()
        try await store.set(StateSetRequest(key: "t||b", value: Data("22".utf8)), on: loop).get()
        try await store.close(on: loop).get()
        try await Task.sleep(for: .milliseconds(1200))

        let reopened = try Env.openSQLite(path: path)
        #expect(reopened.usageByPartition == ["t": 11])  // 5 + 6, the first expired but present
        #expect(try await reopened.purgeExpired(on: loop).get() == 1)
        #expect(reopened.usageByPartition == ["t": 6])
        try await reopened.close(on: loop).get()
    }

    @Test("a transaction rolled back by SQLite itself leaves data and usage unchanged")
    func backendRollback() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        let loop = Env.group.next()

        let store = try Env.openSQLite(path: path)
        try await store.set(StateSetRequest(key: "a||k", value: Data("12345".utf8)), on: loop).get()
        try await store.set(StateSetRequest(key: "b||k", value: Data("1".utf8)), on: loop).get()
        let before = try await Env.entries(["a||k", "b||k", "a||new", "c||k"], in: store, on: loop)
        #expect(store.usageByPartition == ["a": 9, "b": 5])

        // A trigger makes SQLite fail the last write after the others have been applied.
        let saboteur = try SQLiteConnection(path: path, busyTimeout: .seconds(2))
        try saboteur.execute(
            """
            CREATE TRIGGER sabotage BEFORE INSERT ON state WHEN NEW.key = 'boom'
            BEGIN SELECT RAISE(ABORT, 'sabotaged'); END
            """)
        await #expect(throws: StateStoreError.self) {
            try await store.transact(
                [
                    .set(StateSetRequest(key: "a||new", value: Data("123".utf8))),
                    .delete(StateDeleteRequest(key: "b||k")),
                    .set(StateSetRequest(key: "c||k", value: Data("1".utf8))),
                    .set(StateSetRequest(key: "a||k", value: Data())),
                    .set(StateSetRequest(key: "boom", value: Data())),
                ], on: loop
            ).get()
        }
        #expect(try await Env.entries(["a||k", "b||k", "a||new", "c||k"], in: store, on: loop) == before)
        #expect(store.usageByPartition == ["a": 9, "b": 5])

        try saboteur.execute("DROP TRIGGER sabotage")
        saboteur.close()
        try await store.set(StateSetRequest(key: "boom", value: Data()), on: loop).get()
        #expect(store.usageByPartition == ["a": 9, "b": 5, "boom": 4])
        try await store.close(on: loop).get()
    }
}
