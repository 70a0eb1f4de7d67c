import Foundation
import HangarComponents
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// `pubsub.redis`'s byte accounting against a real redis-server, for what the conformance suite cannot see: the
/// counters in Redis shared by several nodes, Dapr's retention kept exact, entries Hangar did not write, and
/// streams that disappear. (The conformance suite's byte accounting and limit tests run against it too.)
@Suite("pubsub.redis byte accounting", .serialized)
struct RedisPubSubAccountingTests {
    let group = MultiThreadedEventLoopGroup.singleton

    /// A bound for replies, not a timing assertion: generous, as the whole suite runs at once on two cores in CI.
    func soon() -> NIODeadline { .now() + .seconds(20) }

    /// Test settings: no periodic trim (tests call it), the cache read often.
    func settings(_ change: (inout RedisPubSub.Settings) -> Void = { _ in }) -> RedisPubSub.Settings {
        var settings = RedisPubSub.Settings()
        settings.cleanupInterval = nil
        settings.usageRefreshInterval = .milliseconds(100)
        // These tests count bytes, not time: a deadline longer than the 1 s default keeps a loaded machine (the
        // whole suite runs at once on two cores in CI) from turning a slow reply into a refusal.
        settings.commandTimeout = .seconds(30)
        change(&settings)
        return settings
    }

    func pubsub(_ server: RedisServer, _ settings: RedisPubSub.Settings) -> RedisPubSub {
        RedisPubSub(
            configuration: RedisConfiguration(testing: server), settings: settings, eventLoopGroup: group)
    }

    func admin(_ server: RedisServer) async throws -> RedisConnection {
        try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: "test-admin"), on: group.next()
        ).get()
    }

    func send(_ connection: RedisConnection, _ arguments: [RESPArgument]) async throws -> RESPValue {
        try await connection.send(arguments, deadline: soon()).get()
    }

    /// The bytes the stream's entries say they count (`byteCount`), and how many entries it has: what the counters
    /// must equal.
    func contents(_ connection: RedisConnection, _ stream: String) async throws -> (bytes: Int, entries: Int) {
        let entries = try await send(connection, ["XRANGE", .string(stream), "-", "+"]).elements ?? []
        var bytes = 0
        for entry in entries {
            let fields = entry.elements?.last?.elements?.compactMap(\.string) ?? []
            for index in stride(from: 0, to: fields.count - 1, by: 2) where fields[index] == "byteCount" {
                bytes += Int(fields[index + 1]) ?? 0
            }
        }
        return (bytes, entries.count)
    }

    /// The counters Redis holds: the topic's, its partition's and the total.
    func counters(_ connection: RedisConnection, topic: String) async throws -> (topic: Int, partition: Int, total: Int)
    {
        let partition = PubSubPartition.of(topic)
        func number(_ value: RESPValue) -> Int { value.string.flatMap { Int($0) } ?? 0 }
        return (
            number(try await send(connection, ["HGET", .string(RedisPubSubKeys.topics(partition)), .string(topic)])),
            number(try await send(connection, ["HGET", .string(RedisPubSubKeys.partitions), .string(partition)])),
            number(try await send(connection, ["GET", .string(RedisPubSubKeys.total)]))
        )
    }

    /// Fetches and acknowledges until `count` deliveries came (or 10 s passed); returns how many did.
    func consume(_ pubsub: RedisPubSub, _ consumer: PubSubConsumer, count: Int) async throws -> Int {
        let loop = group.next()
        var consumed = 0
        let end = ContinuousClock.now + .seconds(10)
        while consumed < count, ContinuousClock.now < end {
            let deliveries = try await pubsub.fetch(consumer, limit: min(500, count - consumed), lease: nil, on: loop)
                .future(on: loop).get().deliveries
            if deliveries.isEmpty {
                try await Task.sleep(for: .milliseconds(20))
                continue
            }
            consumed += try await pubsub.ack(consumer, deliveries.map(\.id), on: loop).future(on: loop).get()
        }
        return consumed
    }

    /// Waits until `condition` holds (the cache is refreshed every 100 ms here), at most 5 s.
    func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<100 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    @Test("two nodes publishing to one tenant at once never take it above its limit, and both see its usage")
    func twoNodesOneLimit() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = group.next()
        let first = pubsub(server, settings())
        let second = pubsub(server, settings())
        defer {
            _ = first.close(on: loop)
            _ = second.close(on: loop)
        }
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        _ = try await first.ensureConsumer(consumer, on: loop).future(on: loop).get()
        let message = PubSubMessage(data: Data(count: 300))
        // 80 publishes of 300 bytes, half from each node, all in flight together: 10,000 bytes hold 33 of them.
        let futures = (0..<80).map { index in
            let node = index.isMultiple(of: 2) ? first : second
            let topic = index.isMultiple(of: 3) ? "ns||other" : consumer.topic
            return node.publish([message], to: topic, partitionLimit: 10_000, on: loop).future(on: loop)
        }
        var accepted = 0
        var refusals: [PubSubError] = []
        for future in futures {
            do {
                _ = try await future.get()
                accepted += 1
            } catch let error as PubSubError {
                refusals.append(error)
            }
        }
        #expect(accepted == 33)
        #expect(refusals.count == 47)
        #expect(refusals.allSatisfy { $0 == .partitionFull(partition: "ns", usage: 10_200, limit: 10_000) })
        let admin = try await admin(server)
        defer { _ = admin.close() }
        let orders = try await contents(admin, consumer.topic)
        let other = try await contents(admin, "ns||other")
        #expect(orders.bytes + other.bytes == 9900, "refused publishes stored nothing")
        #expect(orders.entries + other.entries == 33)
        let counted = try await counters(admin, topic: consumer.topic)
        #expect(counted.topic == orders.bytes && counted.partition == 9900 && counted.total == 9900)
        // Each node's cache catches up with the other's publishes.
        #expect(try await eventually { first.retainedBytes(inPartition: "ns") == 9900 })
        #expect(try await eventually { second.retainedBytes(inPartition: "ns") == 9900 })
        #expect(second.usageByTopic == [consumer.topic: orders.bytes, "ns||other": other.bytes])
    }

    @Test("trim subtracts exactly what it removes, in batches, down to 0 once everything is acknowledged")
    func trimToZero() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = group.next()
        let pubsub = pubsub(server, settings())
        defer { _ = pubsub.close(on: loop) }
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        let late = PubSubConsumer(group: "ns||late", topic: consumer.topic)
        _ = try await pubsub.ensureConsumer(consumer, on: loop).future(on: loop).get()
        _ = try await pubsub.ensureConsumer(late, on: loop).future(on: loop).get()
        // More than two trim batches (`removalBatch`), of varied sizes.
        var bytes = 0
        for batch in 0..<25 {
            let messages = (0..<100).map { index in
                PubSubMessage(
                    data: Data(count: (batch * 100 + index) % 37), contentType: "text/plain",
                    metadata: ["n": "\(index)"])
            }
            bytes += messages.reduce(0) { $0 + $1.byteCount }
            _ = try await pubsub.publish(messages, to: consumer.topic, on: loop).future(on: loop).get()
        }
        #expect(pubsub.usageByTopic == [consumer.topic: bytes])
        #expect(try await consume(pubsub, consumer, count: 2500) == 2500)
        // `late` has consumed nothing: nothing may go.
        #expect(try await pubsub.trim(on: loop).get() == 0)
        #expect(pubsub.retainedBytes(inPartition: "ns") == bytes)
        #expect(try await consume(pubsub, late, count: 1200) == 1200)
        let admin = try await admin(server)
        defer { _ = admin.close() }
        #expect(try await pubsub.trim(on: loop).get() == 1200)
        let left = try await contents(admin, consumer.topic)
        #expect(left.entries == 1300)
        #expect(try await counters(admin, topic: consumer.topic) == (left.bytes, left.bytes, left.bytes))
        #expect(pubsub.usageByTopic == [consumer.topic: left.bytes])
        #expect(try await consume(pubsub, late, count: 1300) == 1300)
        #expect(try await pubsub.trim(on: loop).get() == 1300)
        #expect(try await counters(admin, topic: consumer.topic) == (0, 0, 0))
        #expect(pubsub.usageByTopic == [:] && pubsub.usageByPartition == [:])
        #expect(try await send(admin, ["EXISTS", .string(RedisPubSubKeys.topics("ns"))]) == .integer(0))
    }

    @Test(
        "maxLenApprox and streamTTL remove entries exactly on publish, and the counters follow the stream",
        arguments: ["maxLenApprox", "streamTTL"])
    func retentionKeepsCountersExact(setting: String) async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = group.next()
        let pubsub = pubsub(
            server,
            settings {
                if setting == "maxLenApprox" { $0.maxLenApprox = 10 } else { $0.streamTTL = .seconds(2) }
            })
        defer { _ = pubsub.close(on: loop) }
        let admin = try await admin(server)
        defer { _ = admin.close() }
        let topic = "ns||capped"
        for index in 0..<300 {
            _ = try await pubsub.publish(
                PubSubMessage(data: Data(count: index % 50), contentType: "text/plain"), to: topic, on: loop
            ).future(on: loop).get()
            if index == 150, setting == "streamTTL" { try await Task.sleep(for: .milliseconds(2200)) }
        }
        let stream = try await contents(admin, topic)
        if setting == "maxLenApprox" {
            #expect(stream.entries == 10, "exactly, unlike MAXLEN ~")
        } else {
            #expect(stream.entries == 149, "the 151 published before the pause are older than streamTTL")
        }
        #expect(try await counters(admin, topic: topic) == (stream.bytes, stream.bytes, stream.bytes))
        #expect(pubsub.usageByTopic == [topic: stream.bytes])
    }

    @Test("entries Hangar did not write count nothing, and trimming them leaves the counters exact")
    func foreignEntries() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = group.next()
        let pubsub = pubsub(server, settings())
        defer { _ = pubsub.close(on: loop) }
        let admin = try await admin(server)
        defer { _ = admin.close() }
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        _ = try await pubsub.ensureConsumer(consumer, on: loop).future(on: loop).get()
        let ours = PubSubMessage(data: Data(count: 100), contentType: "text/plain")
        _ = try await pubsub.publish(ours, to: consumer.topic, on: loop).future(on: loop).get()
        // As daprd writes them (no byteCount), with partitionLimit not applying to them.
        for _ in 0..<3 {
            _ = try await send(admin, ["XADD", .string(consumer.topic), "*", "data", "{\"x\":1}", "metadata", "{}"])
        }
        _ = try await pubsub.publish(ours, to: consumer.topic, on: loop).future(on: loop).get()
        #expect(try await counters(admin, topic: consumer.topic) == (220, 220, 220))
        #expect(try await consume(pubsub, consumer, count: 5) == 5)
        #expect(try await pubsub.trim(on: loop).get() == 5)
        #expect(try await counters(admin, topic: consumer.topic) == (0, 0, 0))
        // An entry Hangar counted and someone else deleted (XDEL): the counters hold more than the stream until it
        // is found empty, which holds nothing.
        let deleted = try await pubsub.publish(ours, to: consumer.topic, on: loop).future(on: loop).get()
        _ = try await pubsub.publish(ours, to: consumer.topic, on: loop).future(on: loop).get()
        _ = try await send(admin, ["XDEL", .string(consumer.topic), .string(RedisStreamID.id(deleted))])
        #expect(try await counters(admin, topic: consumer.topic) == (220, 220, 220))
        // The deleted one may still be delivered (read before it went): both are consumed, one is left to trim.
        #expect(try await consume(pubsub, consumer, count: 2) == 2)
        #expect(try await pubsub.trim(on: loop).get() == 1)
        #expect(try await counters(admin, topic: consumer.topic) == (0, 0, 0))
        #expect(pubsub.usageByPartition == [:])
    }

    @Test("a stream that disappears has its counters zeroed, by trim and by the periodic read")
    func vanishedStream() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let loop = group.next()
        let pubsub = pubsub(server, settings())
        defer { _ = pubsub.close(on: loop) }
        let admin = try await admin(server)
        defer { _ = admin.close() }
        let message = PubSubMessage(data: Data(count: 500))
        _ = try await pubsub.publish([message], to: "ns||a", partitionLimit: 1000, on: loop).future(on: loop).get()
        _ = try await pubsub.publish([message], to: "ns||b", partitionLimit: 1000, on: loop).future(on: loop).get()
        await #expect(throws: PubSubError.partitionFull(partition: "ns", usage: 1500, limit: 1000)) {
            try await pubsub.publish([message], to: "ns||a", partitionLimit: 1000, on: loop).future(on: loop).get()
        }
        // Deleted behind Hangar's back: trim finds it gone.
        _ = try await send(admin, ["DEL", "ns||a"])
        _ = try await pubsub.trim(on: loop).get()
        #expect(try await counters(admin, topic: "ns||a") == (0, 500, 500))
        #expect(pubsub.usageByTopic == ["ns||b": 500])
        // Without a trim (a topic only other nodes use), the periodic read zeroes it.
        _ = try await send(admin, ["DEL", "ns||b"])
        #expect(try await eventually { pubsub.usageByPartition == [:] })
        #expect(try await counters(admin, topic: "ns||b") == (0, 0, 0))
        _ = try await pubsub.publish([message, message], to: "ns||a", partitionLimit: 1000, on: loop)
            .future(on: loop).get()
        // The server loses everything, counters included: the cache follows (versions went back).
        _ = try await send(admin, ["FLUSHALL"])
        #expect(try await eventually { pubsub.usageByPartition == [:] })
        _ = try await pubsub.publish([message], to: "ns||a", partitionLimit: 1000, on: loop).future(on: loop).get()
        #expect(try await eventually { pubsub.usageByTopic == ["ns||a": 500] })
    }

    @Test("maxRetainedBytes and cleanupInterval are read as the embedded components read them")
    func metadata() throws {
        let settings = try RedisPubSub.settings(
            ["maxRetainedBytes": "64Mi", "cleanupInterval": "30s"], commandTimeout: .seconds(1))
        #expect(settings.maxRetainedBytes == 64 << 20 && settings.cleanupInterval == .seconds(30))
        let defaults = try RedisPubSub.settings([:], commandTimeout: .seconds(1))
        #expect(defaults.maxRetainedBytes == nil && defaults.cleanupInterval == .seconds(10))
        let off = try RedisPubSub.settings(
            ["cleanupInterval": "0", "maxRetainedBytes": "0"], commandTimeout: .seconds(1))
        #expect(off.maxRetainedBytes == nil && off.cleanupInterval == nil)
        #expect(throws: ComponentDefinitionError.self) {
            try RedisPubSub.settings(["maxRetainedBytes": "lots"], commandTimeout: .seconds(1))
        }
        for name in ["maxRetainedBytes", "cleanupInterval"] {
            #expect(RedisPubSub.descriptor.metadata.contains { $0.name == name })
        }
        #expect(
            !RedisPubSub.descriptor.metadata.contains { $0.name == "maxTopicBytes" || $0.name == "retentionPeriod" })
    }
}
