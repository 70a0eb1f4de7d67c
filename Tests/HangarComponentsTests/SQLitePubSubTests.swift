import Foundation
import HangarComponents
@testable import HangarSQLite
import Logging
import NIOCore
import Testing

/// Behaviour specific to `pubsub.sqlite`: what survives a restart or a crash, and its configuration.
@Suite("SQLite pub/sub", .serialized)
struct SQLitePubSubTests {
    typealias Env = PubSubTestEnvironment

    static let consumer = PubSubConsumer(group: "ns||worker", topic: "ns||jobs")

    @Test("after a reopen, unacked messages come back at once, acked ones never; cursors and sequences persist")
    func restartWithUnacked() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("nested/pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()

        let pubsub = try Env.openSQLite(path: path)
        _ = try await pubsub.ensureConsumer(Self.consumer, on: loop).get()
        _ = try await pubsub.publish(["1", "2", "3"], to: Self.consumer.topic, on: loop)
        let deliveries = try await pubsub.fetch(Self.consumer, lease: .seconds(600), on: loop)
        #expect(deliveries.count == 3)
        #expect(try await pubsub.ack(Self.consumer, [deliveries[1].id], on: loop).get() == 1)
        let usage = pubsub.usageByTopic
        try await pubsub.close(on: loop).get()

        let reopened = try Env.openSQLite(path: path)
        #expect(reopened.lastSequence(of: Self.consumer.topic) == 3)
        #expect(reopened.usageByTopic == usage)
        #expect(try await reopened.ensureConsumer(Self.consumer, on: loop).get() == 3, "the cursor survived")
        let again = try await reopened.fetch(Self.consumer, on: loop)
        #expect(again.map(Env.text) == ["1", "3"], "leases end with the process that held them")
        #expect(again.map(\.attempt) == [2, 2])
        #expect(try await reopened.publish(["4"], to: Self.consumer.topic, on: loop) == [4])
        #expect(try await reopened.fetch(Self.consumer, on: loop).map(\.sequence) == [4])
        try await reopened.close(on: loop).get()
    }

    @Test(
        "a publish whose future completed is in the files at that moment (a copy taken then, as after kill -9, has it)")
    func committedBeforeCompletion() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()

        let pubsub = try Env.openSQLite(path: path)
        _ = try await pubsub.ensureConsumer(Self.consumer, on: loop).get()
        let futures = (1...200).map { pubsub.publish(Env.message("m\($0)"), to: Self.consumer.topic, on: loop) }
        for future in futures { _ = try await future.get() }

        // What a crash right now would leave on disk: the database and its WAL, with the component still open.
        let crashed = directory.appendingPathComponent("crashed")
        try FileManager.default.createDirectory(at: crashed, withIntermediateDirectories: true)
        for suffix in ["", "-wal"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.copyItem(
                atPath: path + suffix, toPath: crashed.appendingPathComponent("pubsub.db" + suffix).path)
        }
        let recovered = try Env.openSQLite(path: crashed.appendingPathComponent("pubsub.db").path)
        #expect(recovered.lastSequence(of: Self.consumer.topic) == 200)
        let deliveries = try await recovered.fetch(Self.consumer, limit: 500, on: loop)
        #expect(deliveries.map(Env.text) == (1...200).map { "m\($0)" })
        try await recovered.close(on: loop).get()
        try await pubsub.close(on: loop).get()
    }

    @Test("one operation that spoils a batch's transaction fails alone: the others of the batch commit")
    func failureIsolation() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()
        let pubsub = try Env.openSQLite(path: path)
        _ = try await pubsub.ensureConsumer(Self.consumer, on: loop).get()
        _ = try await pubsub.publish(["before"], to: "ns||boom", on: loop)

        // A trigger makes SQLite fail every insert into one topic, as a disk error or a corrupt page would.
        let saboteur = try SQLiteConnection(path: path, busyTimeout: .seconds(2))
        try saboteur.execute(
            """
            CREATE TRIGGER sabotage BEFORE INSERT ON pubsub_messages
            WHEN NEW.topic_id = (SELECT id FROM pubsub_topics WHERE name = 'ns||boom')
            BEGIN SELECT RAISE(ABORT, 'sabotaged'); END
            """)
        // Fired together, so that they share batches with the failing publishes in their midst.
        let futures = (0..<300).map { index in
            pubsub.publish(
                Env.message("m\(index)"), to: index % 50 == 25 ? "ns||boom" : Self.consumer.topic, on: loop
            ).future(on: loop)
        }
        var published: [String] = []
        var failures: [Int] = []
        for (index, future) in futures.enumerated() {
            do {
                _ = try await future.get()
                published.append("m\(index)")
            } catch {
                #expect("\(error)".contains("sabotaged"))
                failures.append(index)
            }
        }
        #expect(failures == Array(stride(from: 25, to: 300, by: 50)), "only the sabotaged publishes fail")
        let deliveries = try await pubsub.fetch(Self.consumer, limit: 1000, on: loop)
        #expect(deliveries.map(Env.text) == published, "every other publish is there, once, in order")
        #expect(deliveries.map(\.sequence) == Array(1...UInt64(published.count)), "no sequence lost or reused")
        #expect(pubsub.usageByTopic["ns||boom"] == Env.message("before").byteCount)
        let bytes = published.reduce(Env.message("before").byteCount) { $0 + Env.message($1).byteCount }
        #expect(pubsub.usageByPartition == ["ns": bytes], "the partition's total counts only what committed")

        try saboteur.execute("DROP TRIGGER sabotage")
        saboteur.close()
        #expect(try await pubsub.publish(["after"], to: "ns||boom", on: loop) == [2])
        try await pubsub.close(on: loop).get()
    }

    @Test("usage by partition is read back from the file on reopen")
    func partitionsSurviveReopen() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()
        let pubsub = try Env.openSQLite(path: path)
        _ = try await pubsub.publish(["a", "bb"], to: "t1||x", on: loop)
        _ = try await pubsub.publish(["ccc"], to: "t1||y", on: loop)
        _ = try await pubsub.publish(["dddd"], to: "t2||x", on: loop)
        let usage = pubsub.usageByPartition
        #expect(usage == ["t1": 6 + 3 * "text/plain".utf8.count, "t2": 4 + "text/plain".utf8.count])
        try await pubsub.close(on: loop).get()
        let reopened = try Env.openSQLite(path: path)
        #expect(reopened.usageByPartition == usage)
        #expect(reopened.retainedBytes(inPartition: "t1") == usage["t1"])
        try await reopened.close(on: loop).get()
    }

    @Test("a sequence is never handed out twice: after the log was trimmed empty, and after a reopen")
    func sequencesSurviveTrimming() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()
        let topic = "ns||nobody"

        let pubsub = try Env.openSQLite(path: path)
        #expect(try await pubsub.publish(["1", "2", "3"], to: topic, on: loop) == [1, 2, 3])
        #expect(try await pubsub.trim(on: loop).get() == 3, "no consumer: every message goes")
        #expect(pubsub.usageByTopic[topic] == nil)
        try await pubsub.close(on: loop).get()

        let reopened = try Env.openSQLite(path: path)
        #expect(reopened.lastSequence(of: topic) == 3, "kept by the topic row when the log is empty")
        #expect(try await reopened.publish(["4", "5"], to: topic, on: loop) == [4, 5])
        try await reopened.close(on: loop).get()

        let again = try Env.openSQLite(path: path)
        #expect(again.lastSequence(of: topic) == 5, "read from the log, past the topic row's 3")
        #expect(try await again.publish(["6"], to: topic, on: loop) == [6])
        try await again.close(on: loop).get()
    }

    @Test(
        "a backlog larger than one trimming transaction is removed entirely by one trim",
        arguments: [false, true])
    func chunkedTrim(byRetention: Bool) async throws {
        let limits = Env.limits(retentionPeriod: byRetention ? .milliseconds(1) : nil)
        let count = 2 * SQLitePubSub.trimChunk + 100
        try await Env.withPubSub(.sqlite, limits: limits) { pubsub, loop in
            // By retention, a consumer that acked nothing holds every message: only their age removes them.
            if byRetention { _ = try await pubsub.ensureConsumer(Self.consumer, on: loop).get() }
            for start in stride(from: 0, to: count, by: 100) {
                let messages = (start..<min(count, start + 100)).map { Env.message("m\($0)") }
                _ = try await pubsub.publish(messages, to: Self.consumer.topic, on: loop).get()
            }
            if byRetention { try await Task.sleep(for: .milliseconds(20)) }
            #expect(try await pubsub.trim(on: loop).get() == count)
            #expect(pubsub.usageByTopic.isEmpty)
            #expect(pubsub.usageByPartition.isEmpty)
            #expect(try await pubsub.publish(["next"], to: Self.consumer.topic, on: loop) == [UInt64(count + 1)])
        }
    }

    @Test("under a steady stream of commits the WAL is checkpointed beside the writer and starts again")
    func walStartsAgain() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("pubsub.db").path
        let loop = PubSubTestEnvironment.group.next()

        let pubsub = try Env.openSQLite(path: path)
        var highest = 0
        var restarted = false
        // One commit each, two pages or more per commit: several times the checkpoint threshold in all.
        for index in 0..<(2 * SQLitePubSubCheckpointer.threshold) {
            _ = try await pubsub.publish(Env.message("m\(index)"), to: Self.consumer.topic, on: loop).get()
            let frames = try #require(pubsub.walFrames)
            if frames < highest { restarted = true }
            highest = max(highest, frames)
        }
        #expect(highest >= SQLitePubSubCheckpointer.threshold)
        #expect(restarted, "the WAL started again from its beginning (its frame count fell)")
        try await pubsub.close(on: loop).get()

        let reopened = try Env.openSQLite(path: path)
        let published = 2 * SQLitePubSubCheckpointer.threshold
        #expect(reopened.lastSequence(of: Self.consumer.topic) == UInt64(published))
        let bytes = (0..<published).reduce(0) { $0 + Env.message("m\($1)").byteCount }
        #expect(reopened.usageByTopic[Self.consumer.topic] == bytes, "every message is in the database")
        try await reopened.close(on: loop).get()
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"), "the last connection to close removes it")
    }

    @Test("synchronous=FULL works the same")
    func synchronousFull() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = PubSubTestEnvironment.group.next()
        let pubsub = try SQLitePubSub(
            configuration: .init(
                path: directory.appendingPathComponent("full.db").path, limits: Env.limits(), synchronousFull: true),
            threadPool: Env.threadPool, eventLoopGroup: PubSubTestEnvironment.group,
            logger: StateTestEnvironment.logger)
        _ = try await pubsub.ensureConsumer(Self.consumer, on: loop).get()
        _ = try await pubsub.publish(["durable"], to: Self.consumer.topic, on: loop)
        #expect(try await pubsub.fetch(Self.consumer, on: loop).map(Env.text) == ["durable"])
        try await pubsub.close(on: loop).get()
    }
}

/// The descriptors of both pub/sub types: registration, metadata, defaults and refusals.
@Suite("Pub/sub descriptors")
struct PubSubDescriptorTests {
    static func context(_ directory: String) -> ComponentContext {
        ComponentContext(
            dataDirectory: directory, threadPool: PubSubTestEnvironment.threadPool,
            eventLoopGroup: PubSubTestEnvironment.group, logger: StateTestEnvironment.logger)
    }

    static func factory(_ descriptor: ComponentDescriptor) throws -> ComponentDescriptor.Factory<any PubSub> {
        guard case .pubsub(let make) = descriptor.make else { throw PubSubError.invalidArgument("not pub/sub") }
        return make
    }

    @Test("both types are registered as pub/sub components, with Dapr's block metadata accepted")
    func registered() throws {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        HangarSQLite.register(into: &registry)
        let memory = try #require(registry.descriptor(for: "pubsub.in-memory"))
        let sqlite = try #require(registry.descriptor(for: "pubsub.sqlite"))
        #expect(memory.block == .pubsub && memory.executesInline)
        #expect(sqlite.block == .pubsub && !sqlite.executesInline)
        for metadata in ["connectionString", "ackTimeout", "retentionPeriod", "maxTopicBytes", "cleanupInterval"] {
            #expect(sqlite.metadata.map(\.name).contains(metadata))
        }
        let definition = ComponentDefinition(
            name: "pubsub", type: "pubsub.sqlite",
            metadata: ["consumerID": "x", "allowedTopics": "a,b", "ackTimeout": "5s", "retentionPeriod": "1h"])
        _ = try registry.check(definition)
        #expect(registry.unknownMetadata(definition).isEmpty)
        #expect(sqlite.metadata.allSatisfy { !$0.required }, "every field is optional")
    }

    @Test("the factories open working components; sqlite's file defaults to <name>.db in the data directory")
    func factoriesOpen() async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = PubSubTestEnvironment.group.next()
        let consumer = PubSubConsumer(group: "g", topic: "t")
        for descriptor in [InMemoryPubSub.descriptor, SQLitePubSub.descriptor] {
            let open = try Self.factory(descriptor)(
                ComponentDefinition(name: "events", type: descriptor.type), Self.context(directory.path))
            let pubsub = try open()
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish(["hello"], to: "t", on: loop)
            #expect(try await pubsub.fetch(consumer, on: loop).map(PubSubTestEnvironment.text) == ["hello"])
            try await pubsub.close(on: loop).get()
        }
        #expect(FileManager.default.fileExists(atPath: directory.appendingPathComponent("events.db").path))
    }

    @Test("pubsub.sqlite has a byte bound by default (4 GiB), which 0 turns off; in-memory keeps its 64 MiB")
    func defaultRetainedBytes() throws {
        let sqlite = try SQLitePubSub.configuration(
            ComponentDefinition(name: "p", type: "pubsub.sqlite"), dataDirectory: "/data")
        #expect(sqlite.limits.maxRetainedBytes == 4 << 30)
        let unbounded = try SQLitePubSub.configuration(
            ComponentDefinition(name: "p", type: "pubsub.sqlite", metadata: ["maxRetainedBytes": "0"]),
            dataDirectory: "/data")
        #expect(unbounded.limits.maxRetainedBytes == nil)
        #expect(InMemoryPubSub.defaultLimits.maxRetainedBytes == 64 << 20)
    }

    @Test(
        "state.sqlite and pubsub.sqlite read connectionString and busyTimeout the same way",
        arguments: [
            // (connectionString, busyTimeout, expected path under /data, expected busy timeout in ms)
            (nil, nil, "/data/c.db", 2000), ("", "", "/data/c.db", 2000), ("  ", "0", "/data/c.db", 0),
            ("x.db", "-1s", "/data/x.db", 0), ("/abs/y.db", "-5", "/abs/y.db", 0),
            (
                "file:z.db?mode=rwc", "1500ms",
                "/data/z.db", 1500
            ), (":memory:", "3", ":memory:", 3000), (nil, "+250ms", "/data/c.db", 250),
        ] as [(String?, String?, String, Int64)])
    func sharedSQLiteMetadata(connectionString: String?, busyTimeout: String?, path: String, busy: Int64) throws {
        var metadata: [String: String] = [:]
        metadata["connectionString"] = connectionString
        metadata["busyTimeout"] = busyTimeout
        let pubsub = try SQLitePubSub.configuration(
            ComponentDefinition(name: "c", type: "pubsub.sqlite", metadata: metadata), dataDirectory: "/data")
        let state = try SQLiteStateStore.configuration(
            ComponentDefinition(name: "c", type: "state.sqlite", metadata: metadata), dataDirectory: "/data")
        #expect(pubsub.path == path && state.path == path)
        #expect(pubsub.busyTimeout == .milliseconds(busy) && state.busyTimeout == .milliseconds(busy))
    }

    @Test(
        "a busyTimeout that is not a duration is refused by both SQLite components, naming the field",
        arguments: ["x", "--1s", "-", "1 fortnight"])
    func badBusyTimeout(value: String) {
        let pubsub = #expect(throws: ComponentDefinitionError.self) {
            _ = try SQLitePubSub.configuration(
                ComponentDefinition(name: "c", type: "pubsub.sqlite", metadata: ["busyTimeout": value]),
                dataDirectory: "/data")
        }
        let state = #expect(throws: ComponentDefinitionError.self) {
            _ = try SQLiteStateStore.configuration(
                ComponentDefinition(name: "c", type: "state.sqlite", metadata: ["busyTimeout": value]),
                dataDirectory: "/data")
        }
        #expect(pubsub?.field == "spec.metadata.busyTimeout" && state?.field == "spec.metadata.busyTimeout")
    }

    @Test("metadata is read with Dapr-like names, units and defaults")
    func metadataValues() throws {
        let limits = try PubSubLimits(
            metadata: [
                "visibilityTimeout": "1500ms", "retentionPeriod": "0", "maxTopicBytes": "64Mi",
                "maxRetainedBytes": "2G", "cleanupInterval": "30",
            ], defaults: PubSubLimits())
        #expect(limits.ackTimeout == .milliseconds(1500))
        #expect(limits.retentionPeriod == nil)
        #expect(limits.maxTopicBytes == 64 << 20)
        #expect(limits.maxRetainedBytes == 2_000_000_000)
        #expect(limits.cleanupInterval == .seconds(30))
        let defaults = try PubSubLimits(metadata: [:], defaults: InMemoryPubSub.defaultLimits)
        #expect(defaults.maxRetainedBytes == 64 << 20)
        #expect(defaults.ackTimeout == .seconds(60))
        #expect(defaults.retentionPeriod == .seconds(24 * 3600))
    }

    @Test(
        "a bad metadata value is refused naming its field, before anything is opened",
        arguments: [
            ("ackTimeout", "soon"), ("ackTimeout", "0"), ("retentionPeriod", "-1h"), ("maxTopicBytes", "lots"),
            ("maxRetainedBytes", "12Qi"), ("cleanupInterval", "often"), ("busyTimeout", "x"), ("synchronous", "maybe"),
        ])
    func badMetadata(name: String, value: String) throws {
        let directory = "/nonexistent/never-created"
        for descriptor in [InMemoryPubSub.descriptor, SQLitePubSub.descriptor]
        where descriptor.metadata.contains(where: { $0.name == name }) {
            let error = #expect(throws: ComponentDefinitionError.self) {
                _ = try Self.factory(descriptor)(
                    ComponentDefinition(name: "p", type: descriptor.type, metadata: [name: value]),
                    Self.context(directory))
            }
            #expect(error?.field == "spec.metadata.\(name)")
        }
        #expect(!FileManager.default.fileExists(atPath: directory))
    }
}
