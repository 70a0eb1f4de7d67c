import Foundation
import HangarComponents
@testable import HangarSQLite
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Reads served on the event loop (`SQLiteInlineReads`): what they see, that a writer never holds them up, and that
/// they give way to the thread pool when they must.
extension SQLiteStateStoreTests {
    /// How a read on the loop was answered.
    enum Answer: Equatable {
        /// At once, on the loop.
        case ready
        /// Later, from the thread pool.
        case later
    }

    /// Calls `operation` on `loop`, as the front-ends do, and answers how it was answered and its value.
    static func onLoop<Value: Sendable>(
        _ loop: any EventLoop, _ operation: @escaping @Sendable () -> Eventual<Value>
    ) async throws -> (Answer, Value) {
        let outcome = try await loop.submit(operation).get()
        switch outcome {
        case .ready(let result): return (.ready, try result.get())
        case .later(let future): return (.later, try await future.get())
        }
    }

    /// A store on a file with a budget that no read on a loaded test machine exceeds, unless the test sets another.
    static func openInline(
        _ path: String, budget: Duration? = .seconds(5), retry: Duration = .seconds(1)
    ) throws -> SQLiteStateStore {
        try SQLiteStateStore(
            configuration: .init(
                path: path, busyTimeout: .seconds(20), cleanupInterval: nil, inlineReadBudget: budget,
                inlineReadRetry: retry),
            threadPool: Env.threadPool, eventLoopGroup: Env.group, logger: Env.logger)
    }

    /// Reads `key` on the loop until one is answered there with inline reads on: the loop's reader is open and the
    /// one-time costs of its first reads (which may wait on a lock of the runtime, and then count as slow with a
    /// zero budget) are behind.
    static func warmUp(_ store: SQLiteStateStore, _ key: String, on loop: any EventLoop) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if try await onLoop(loop, { store.get(key, on: loop) }).0 == .ready, store.inlineReads?.isOn == true {
                return
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("reads never came to the loop")
    }

    @Test("reads on an event loop are answered there and see every committed write")
    func inlineReadsSeeCommittedWrites() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try Self.openInline(directory.appendingPathComponent("state.db").path)
        let loop = Env.group.next()
        #expect(store.inlineReads?.isOn == true, "a database just written is in the page cache")

        try await store.set(StateSetRequest(key: "k", value: Data("one".utf8)), on: loop).get()
        // The loop's first read goes to the pool, which opens the loop's connection for the next ones.
        let (first, firstValue) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        #expect(first == .later)
        #expect(firstValue?.value == Data("one".utf8))
        let (second, secondValue) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        #expect(second == .ready)
        #expect(secondValue == firstValue, "the same entry and ETag as the pool's reader")

        for round in 0..<20 {
            let value = Data("value \(round)".utf8)
            try await store.set(StateSetRequest(key: "k", value: value), on: loop).get()
            let (answer, entry) = try await Self.onLoop(loop) { store.get("k", on: loop) }
            #expect(answer == .ready)
            #expect(entry?.value == value, "round \(round): the write before the read is seen")
            #expect(entry?.etag == (try await store.get("k", on: loop).get())?.etag)
        }

        try await store.transact(
            [
                .set(StateSetRequest(key: "a", value: Data("A".utf8))),
                .set(StateSetRequest(key: "b", value: Data("B".utf8), ttl: .seconds(3600))),
                .delete(StateDeleteRequest(key: "k")),
            ], on: loop
        ).get()
        let (bulk, entries) = try await Self.onLoop(loop) { store.bulkGet(["a", "b", "k", "missing"], on: loop) }
        #expect(bulk == .ready)
        let values = try entries.map { try $0.get()?.value }
        #expect(values == [Data("A".utf8), Data("B".utf8), nil, nil])
        #expect(try entries[1].get()?.expiresAt != nil)
        let (deleted, gone) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        #expect(deleted == .ready)
        #expect(gone == nil)

        // An item whose TTL has passed is hidden on the loop as on the pool.
        try await store.set(StateSetRequest(key: "short", value: Data(), ttl: .milliseconds(1)), on: loop).get()
        try await Task.sleep(for: .milliseconds(20))
        let (expired, hidden) = try await Self.onLoop(loop) { store.get("short", on: loop) }
        #expect(expired == .ready)
        #expect(hidden == nil)

        // More keys than the bulk limit, and reads asked for off the loop, go to the pool.
        let many = (0...SQLiteInlineReads.Settings(budget: .zero, retryInterval: .seconds(1)).bulkLimit).map { "x\($0)" }
        let (big, _) = try await Self.onLoop(loop) { store.bulkGet(many, on: loop) }
        #expect(big == .later)
        guard case .later(let future) = store.get("a", on: loop) else {
            Issue.record("a read asked for off the loop was answered on the calling thread")
            return
        }
        #expect(try await future.get()?.value == Data("A".utf8))

        try await store.close(on: loop).get()
        await #expect(throws: StateStoreError.closed) {
            _ = try await Self.onLoop(loop) { store.get("a", on: loop) }
        }
    }

    @Test("a write transaction in progress never holds up a read on the loop")
    func inlineReadsDoNotWaitForWriters() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        let store = try Self.openInline(path)
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("committed".utf8)), on: loop).get()
        _ = try await Self.onLoop(loop) { store.get("k", on: loop) }  // Opens the loop's reader.

        // Another connection holds the write lock with an uncommitted change, as a long transaction would.
        let other = try SQLiteConnection(path: path, busyTimeout: .seconds(5))
        defer { other.close() }
        try other.execute("BEGIN IMMEDIATE; UPDATE state SET value = x'00' WHERE key = 'k'")
        // The store's own write now waits for that lock on the pool.
        let blockedWrite = store.set(StateSetRequest(key: "k", value: Data("next".utf8)), on: loop)
        try await Task.sleep(for: .milliseconds(50))

        let started = ContinuousClock.now
        let (answer, entry) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        let elapsed = ContinuousClock.now - started
        #expect(answer == .ready)
        #expect(entry?.value == Data("committed".utf8), "the last committed value, not the open transaction's")
        #expect(elapsed < .seconds(1), "answered without waiting for the writer (took \(elapsed))")

        try other.execute("COMMIT")
        try await blockedWrite.get()
        let (after, latest) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        #expect(after == .ready)
        #expect(latest?.value == Data("next".utf8))
        try await store.close(on: loop).get()
    }

    @Test("a read slower than the budget that did not wait for anything keeps reads on the loop")
    func slowWithoutWaitingStaysInline() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // Every read is slower than a zero budget; none of them waits for the disk (the file is cached).
        let store = try Self.openInline(
            directory.appendingPathComponent("state.db").path, budget: .zero, retry: .milliseconds(50))
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
        try await Self.warmUp(store, "k", on: loop)
        var ready = 0
        for _ in 0..<40 {
            if try await Self.onLoop(loop, { store.get("k", on: loop) }).0 == .ready { ready += 1 }
        }
        // A rule that counted only the time would leave one or two on the loop: each turns reads off for 50 ms and
        // more, longer than the 40 reads take.
        #expect(ready >= 35, "\(ready) of 40 reads on the loop")
        try await store.close(on: loop).get()
    }

    @Test("a thread's disk reads change when it reads an evicted file, not while it computes or sleeps")
    func diskReads() throws {
        let before = DiskReads.now()
        var sum = 0
        let end = ContinuousClock.now + .milliseconds(2)
        while ContinuousClock.now < end { sum &+= 1 }
        #expect(sum > 0)
        usleep(2000)
        #expect(DiskReads.now() == before)
        #if canImport(Glibc)
            let directory = try Env.makeDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let path = directory.appendingPathComponent("file").path
            try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: path))
            let descriptor = open(path, O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            fsync(descriptor)
            posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
            guard !SQLiteInlineReads.resident([path], prefetchLimit: 0) else { return }  // tmpfs
            let beforeRead = DiskReads.now()
            var buffer = [UInt8](repeating: 0, count: 4096)
            #expect(pread(descriptor, &buffer, buffer.count, 512 << 10) == buffer.count)
            #expect(DiskReads.now().blocksRead > beforeRead.blocksRead)
        #endif
    }

    @Test("a read that waited for the disk sends reads to the pool until the files are cached again")
    func diskReadFallsBack() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("state.db").path
        // A penalty of 3 s, so that the reads below run within it even on a machine busy with other tests.
        let store = try Self.openInline(path, budget: .zero, retry: .seconds(3))
        let loop = Env.group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
        try await Self.warmUp(store, "k", on: loop)

        // A write empties the loop reader's page cache; then the files are written back and dropped from the kernel's
        // page cache, so that the next read goes to the disk.
        try await store.set(StateSetRequest(key: "k", value: Data("w".utf8)), on: loop).get()
        let files = [path, path + "-wal"]
        #if canImport(Glibc)
            for file in files {
                let descriptor = open(file, O_RDONLY)
                try #require(descriptor >= 0)
                fsync(descriptor)
                posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
                close(descriptor)
            }
        #endif
        guard !SQLiteInlineReads.resident(files, prefetchLimit: 0) else {
            // A file system that keeps its pages in memory (tmpfs): no read can wait for a disk here.
            try await store.close(on: loop).get()
            return
        }
        let (slow, value) = try await Self.onLoop(loop) { store.get("k", on: loop) }
        let penalised = ContinuousClock.now
        #expect(slow == .ready, "served, but it waited for the disk")
        #expect(value?.value == Data("w".utf8))
        #expect(store.inlineReads?.isOn == false)
        for _ in 0..<5 {
            let (answer, entry) = try await Self.onLoop(loop) { store.get("k", on: loop) }
            #expect(answer == .later)
            #expect(entry?.value == Data("w".utf8))
            let (bulk, _) = try await Self.onLoop(loop) { store.bulkGet(["k", "j"], on: loop) }
            #expect(bulk == .later)
        }

        // After the penalty the first read goes to the pool and starts the residency check, which reads the files
        // back in (they are small) and turns reads on again once they are there.
        try await Task.sleep(until: penalised + .milliseconds(3100))
        #expect(try await Self.onLoop(loop) { store.get("k", on: loop) }.0 == .later)
        let deadline = ContinuousClock.now + .seconds(10)
        while store.inlineReads?.isOn != true, ContinuousClock.now < deadline {
            _ = try await Self.onLoop(loop) { store.get("k", on: loop) }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(store.inlineReads?.isOn == true)
        #expect(try await Self.onLoop(loop) { store.get("k", on: loop) }.0 == .ready)
        try await store.close(on: loop).get()
    }

    @Test("without an inline budget every read goes to the pool; :memory: reads on the loop from the free writer")
    func inlineReadsOffAndInMemory() async throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = Env.group.next()
        let off = try Self.openInline(directory.appendingPathComponent("state.db").path, budget: nil)
        #expect(off.inlineReads == nil)
        try await off.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
        for _ in 0..<3 {
            let (answer, entry) = try await Self.onLoop(loop) { off.get("k", on: loop) }
            #expect(answer == .later)
            #expect(entry?.value == Data("v".utf8))
        }
        try await off.close(on: loop).get()

        let memory = try Self.openInline(":memory:")
        try await memory.set(StateSetRequest(key: "k", value: Data("v".utf8)), on: loop).get()
        let (answer, entry) = try await Self.onLoop(loop) { memory.get("k", on: loop) }
        #expect(answer == .ready)
        #expect(entry?.value == Data("v".utf8))
        let (bulk, entries) = try await Self.onLoop(loop) { memory.bulkGet(["k", "j"], on: loop) }
        #expect(bulk == .ready)
        #expect(try entries.map { try $0.get()?.value } == [Data("v".utf8), nil])
        try await memory.close(on: loop).get()

        #expect(throws: SQLiteStateStore.ConfigurationError.self) {
            try Self.openInline(":memory:", budget: .milliseconds(-1))
        }
        #expect(throws: SQLiteStateStore.ConfigurationError.self) {
            try Self.openInline(":memory:", retry: .zero)
        }
    }

    @Test("files evicted from the page cache are not resident, and small ones are read back in")
    func residency() throws {
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("file").path
        #expect(SQLiteInlineReads.resident([path], prefetchLimit: 0), "a missing file (a WAL not created) counts")
        try Data(repeating: 7, count: 1 << 20).write(to: URL(fileURLWithPath: path))
        #expect(SQLiteInlineReads.resident([path], prefetchLimit: 0), "a file just written is in the page cache")
        #if canImport(Glibc)
            // Write the pages back, then drop them (tmpfs keeps them, and then there is nothing more to check).
            let descriptor = open(path, O_RDONLY)
            try #require(descriptor >= 0)
            defer { close(descriptor) }
            fsync(descriptor)
            posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
            guard !SQLiteInlineReads.resident([path], prefetchLimit: 0) else { return }
            #expect(!SQLiteInlineReads.resident([path], prefetchLimit: 0), "too big to be read in: still out")
            // Within the limit: the kernel reads it in, in the background.
            var resident = SQLiteInlineReads.resident([path], prefetchLimit: 2 << 20)
            let deadline = Date().addingTimeInterval(10)
            while !resident, Date() < deadline {
                Thread.sleep(forTimeInterval: 0.01)
                resident = SQLiteInlineReads.resident([path], prefetchLimit: 2 << 20)
            }
            #expect(resident)
        #endif
    }
}

