import Foundation
import HangarComponents
import NIOCore
import NIOPosix
import Testing

import HangarTestSupport

@testable import HangarRedis

/// `pubsub.redis` against a real redis-server, for what the pub/sub conformance suite cannot see: its connections,
/// its layout (Dapr's), redelivery across nodes, and outages. (The conformance suite runs against it too.)
@Suite("pubsub.redis", .serialized)
struct RedisPubSubTests {
    let group = MultiThreadedEventLoopGroup.singleton

    /// A bound for replies, not a timing assertion: generous, as the whole suite runs at once on two cores in CI.
    func soon() -> NIODeadline { .now() + .seconds(20) }

    func admin(_ server: RedisServer) async throws -> RedisConnection {
        try await RedisConnection.connect(
            RedisConfiguration(testing: server, clientName: "test-admin"), on: group.next()
        ).get()
    }

    /// The connections the server has from clients named `name`.
    func connections(named name: String, on server: RedisServer) async throws -> Int {
        let admin = try await admin(server)
        defer { _ = admin.close() }
        let list = try await admin.send(["CLIENT", "LIST"], deadline: soon()).get().string ?? ""
        return list.split(separator: "\n").filter { $0.contains(" name=\(name) ") }.count
    }

    /// With a 10 s command deadline rather than the 1 s default: these tests check behaviour, and CI runs the whole
    /// suite at once on two cores, where a reply can take over a second. (A server that is down fails a command at
    /// once, whatever its deadline: the outage test still checks that it fails fast.)
    func pubsub(_ server: RedisServer, settings: RedisPubSub.Settings = .init()) -> RedisPubSub {
        var settings = settings
        settings.commandTimeout = .seconds(10)
        return RedisPubSub(
            configuration: RedisConfiguration(testing: server), settings: settings, eventLoopGroup: group)
    }

    func message(_ text: String) -> PubSubMessage {
        PubSubMessage(data: Data(text.utf8), contentType: "text/plain")
    }

    /// Fetches until something comes or `timeout` passes.
    /// Fetches until something comes (the node's blocking read brings what was published a moment later), leasing
    /// it for `lease` (nil: the processing timeout).
    func fetchUntilSome(
        _ pubsub: RedisPubSub, _ consumer: PubSubConsumer, lease: Duration? = nil, timeout: Duration = .seconds(5)
    ) async throws -> [PubSubDelivery] {
        let loop = group.next()
        let end = ContinuousClock.now + timeout
        while ContinuousClock.now < end {
            if let deliveries = try? await pubsub.fetch(consumer, limit: 10, lease: lease, on: loop).future(on: loop)
                .get().deliveries, !deliveries.isEmpty
            {
                return deliveries
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return []
    }

    @Test("one blocking connection per group on the node, whatever the number of topics it reads")
    func oneBlockingReadPerGroup() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pubsub = pubsub(server)
        let loop = group.next()
        for topic in 0..<12 {
            _ = try await pubsub.ensureConsumer(.init(group: "ns||billing", topic: "ns||t\(topic)"), on: loop)
                .future(on: loop).get()
        }
        for topic in 0..<5 {
            _ = try await pubsub.ensureConsumer(.init(group: "ns||shipping", topic: "ns||t\(topic)"), on: loop)
                .future(on: loop).get()
        }
        // Every topic is read: a publish to the last one added wakes its waiter and is fetched.
        let consumer = PubSubConsumer(group: "ns||billing", topic: "ns||t11")
        let woken = pubsub.waitForPublish(to: consumer.topic, beyond: 0, timeout: .seconds(5), on: loop)
        let other = try await RedisConnection.connect(RedisConfiguration(testing: server), on: loop).get()
        defer { _ = other.close() }
        // Written by someone else (another node, a Dapr sidecar): only the blocking read can tell this node.
        _ = try await other.send(["XADD", "ns||t11", "*", "data", "{}"], deadline: soon()).get()
        #expect(try await woken.get(), "the blocking read saw the entry")
        #expect(try await fetchUntilSome(pubsub, consumer).count == 1)

        try await Task.sleep(for: .milliseconds(200))
        #expect(try await connections(named: RedisPubSub.readerClientName, on: server) == 2)
        #expect(pubsub.readerCount == 2)
        #expect(pubsub.client.connectionCount <= RedisClient.Options().maxConnections)
        try await pubsub.close(on: loop).get()
        var left = -1
        // Up to 10 s: on a machine busy with other tests the server may take a while to see the closes.
        for _ in 0..<200 {
            left = try await connections(named: RedisPubSub.readerClientName, on: server)
            if left == 0 { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        if left != 0 {
            let admin = try await RedisConnection.connect(RedisConfiguration(testing: server), on: loop).get()
            let list = try await admin.send(["CLIENT", "LIST"], deadline: soon()).get().string ?? ""
            _ = admin.close()
            Issue.record("left: \(list)")
        }
        #expect(left == 0, "closing the component closes its blocking connections")
    }

    @Test("an entry a node fetched and never acknowledged is redelivered by another after processingTimeout")
    func pendingRedelivery() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var settings = RedisPubSub.Settings()
        settings.processingTimeout = .milliseconds(400)
        settings.redeliverInterval = .milliseconds(100)
        let loop = group.next()
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        let first = pubsub(server, settings: settings)
        let second = pubsub(server, settings: settings)
        defer { _ = second.close(on: loop) }
        _ = try await first.ensureConsumer(consumer, on: loop).future(on: loop).get()
        _ = try await first.publish(message("lost"), to: consumer.topic, on: loop).future(on: loop).get()
        let taken = try await fetchUntilSome(first, consumer, lease: .seconds(60))
        #expect(taken.map(\.attempt) == [1])
        // Only now does the second node read the group: had it read before, its blocking read could have taken the
        // entry first (both nodes' readers share the group).
        _ = try await second.ensureConsumer(consumer, on: loop).future(on: loop).get()
        // The first node dies with the entry leased.
        try await first.close(on: loop).get()
        #expect(
            try await second.fetch(consumer, limit: 10, lease: nil, on: loop).future(on: loop).get().deliveries
                .isEmpty, "not before processingTimeout")
        let again = try await fetchUntilSome(second, consumer)
        #expect(again.map(\.sequence) == taken.map(\.sequence))
        #expect(again.map(\.attempt) == [2])
        #expect(try await second.ack(consumer, again.map(\.id), on: loop).future(on: loop).get() == 1)
    }

    @Test("an entry leased here for longer than processingTimeout is not taken by another node")
    func longLeaseKept() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        // processingTimeout must leave room for the first node's timer on a loaded machine: it claims its leases
        // again every half of it.
        var settings = RedisPubSub.Settings()
        settings.processingTimeout = .seconds(3)
        settings.redeliverInterval = .milliseconds(100)
        let loop = group.next()
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        let first = pubsub(server, settings: settings)
        let second = pubsub(server, settings: settings)
        defer {
            _ = first.close(on: loop)
            _ = second.close(on: loop)
        }
        _ = try await first.ensureConsumer(consumer, on: loop).future(on: loop).get()
        _ = try await first.publish(message("mine"), to: consumer.topic, on: loop).future(on: loop).get()
        let taken = try await fetchUntilSome(first, consumer, lease: .seconds(60))
        #expect(taken.count == 1)
        // Only now does the second node read the group (its blocking read could have taken the entry first).
        _ = try await second.ensureConsumer(consumer, on: loop).future(on: loop).get()
        try await Task.sleep(for: .seconds(7))
        #expect(
            try await second.fetch(consumer, limit: 10, lease: nil, on: loop).future(on: loop).get().deliveries
                .isEmpty)
        #expect(try await first.ack(consumer, taken.map(\.id), on: loop).future(on: loop).get() == 1)
    }

    @Test("publishes fail fast while the server is down; publishing and delivery resume after it restarts")
    func restart() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pubsub = pubsub(server)
        let loop = group.next()
        defer { _ = pubsub.close(on: loop) }
        let consumer = PubSubConsumer(group: "ns||app", topic: "ns||orders")
        _ = try await pubsub.ensureConsumer(consumer, on: loop).future(on: loop).get()
        _ = try await pubsub.publish(message("before"), to: consumer.topic, on: loop).future(on: loop).get()
        #expect(
            try await fetchUntilSome(pubsub, consumer).map { String(decoding: $0.message.data, as: UTF8.self) }
                == ["before"])
        #expect(pubsub.backendProblem == nil)

        server.crash()
        for _ in 0..<3 {
            let start = ContinuousClock.now
            do {
                _ = try await pubsub.publish(message("during"), to: consumer.topic, on: loop).future(on: loop).get()
                Issue.record("a publish succeeded with the server down")
            } catch let error as PubSubError {
                guard case .unavailable(let text) = error else {
                    Issue.record("not unavailable: \(error)")
                    continue
                }
                #expect(text.contains("cannot be reached"))
            }
            // Fast: refused at once, not after the 10 s command deadline (a bound far from it, as the machine
            // may be loaded; the e2e outage tests measure the default configuration).
            #expect(ContinuousClock.now - start < .seconds(5), "fails fast")
        }
        #expect(pubsub.backendProblem != nil)

        try server.restart()
        // The server came back empty (no persistence): the stream and the group are gone; both are made again.
        var published = false
        let end = ContinuousClock.now + .seconds(5)
        while !published, ContinuousClock.now < end {
            published =
                (try? await pubsub.publish(message("after"), to: consumer.topic, on: loop).future(on: loop).get())
                != nil
            if !published { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(published, "publishing works again within 5 s")
        let after = try await fetchUntilSome(pubsub, consumer)
        #expect(after.map { String(decoding: $0.message.data, as: UTF8.self) } == ["after"])
        for _ in 0..<50 where pubsub.backendProblem != nil { try await Task.sleep(for: .milliseconds(100)) }
        #expect(pubsub.backendProblem == nil)
    }

    @Test("entries written in Dapr's layout are delivered, and Hangar's are what Dapr reads")
    func daprLayout() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let pubsub = pubsub(server)
        let loop = group.next()
        defer { _ = pubsub.close(on: loop) }
        let consumer = PubSubConsumer(group: "orders-app", topic: "orders")
        _ = try await pubsub.ensureConsumer(consumer, on: loop).future(on: loop).get()
        let admin = try await admin(server)
        defer { _ = admin.close() }
        // As daprd's pubsub.redis writes it: XADD <topic> * data <cloudevent> metadata <json>.
        let event = #"{"specversion":"1.0","id":"1","source":"dapr-app","type":"com.dapr.event.sent","data":"hi"}"#
        _ = try await admin.send(
            ["XADD", "orders", "*", "data", .string(event), "metadata", #"{"traceparent":"00-1-2-01"}"#],
            deadline: soon()
        ).get()
        _ = try await admin.send(
            ["XADD", "orders", "*", "data", "raw bytes", "metadata", #"{"rawPayload":"true"}"#], deadline: soon()
        ).get()
        var delivered: [PubSubDelivery] = []
        for _ in 0..<50 where delivered.count < 2 {
            delivered += try await fetchUntilSome(pubsub, consumer)
        }
        #expect(delivered.map(\.message.data) == [Data(event.utf8), Data("raw bytes".utf8)])
        #expect(delivered.map(\.message.contentType) == ["application/cloudevents+json", "application/octet-stream"])
        #expect(delivered.first?.message.metadata == ["traceparent": "00-1-2-01"])
        #expect(try await pubsub.ack(consumer, delivered.map(\.id), on: loop).future(on: loop).get() == 2)

        // Hangar's publish: the fields Dapr's reader takes (data, metadata as a JSON object of strings).
        let sequence = try await pubsub.publish(
            PubSubMessage(data: Data(event.utf8), contentType: "application/cloudevents+json", metadata: ["a": "b"]),
            to: "orders", on: loop
        ).future(on: loop).get()
        let id = RedisStreamID.id(sequence)
        let range = try await admin.send(["XRANGE", "orders", .string(id), .string(id)], deadline: soon()).get()
        let fields = range.elements?.first?.elements?.last?.elements?.compactMap(\.string) ?? []
        var values: [String: String] = [:]
        for index in stride(from: 0, to: fields.count - 1, by: 2) { values[fields[index]] = fields[index + 1] }
        #expect(values["data"] == event)
        #expect(values["metadata"] == #"{"a":"b"}"#)
        // The group Dapr's sidecar of this app would use is the same group.
        let groups = try await admin.send(["XINFO", "GROUPS", "orders"], deadline: soon()).get()
        #expect(groups.elements?.count == 1)
    }

    @Test("stream ids and sequences map both ways, in order")
    func streamIDs() {
        let ids = ["0-1", "1-0", "1712345678901-0", "1712345678901-3", "1712345678902-0", "4398046511103-4194303"]
        let sequences = ids.compactMap(RedisStreamID.sequence)
        #expect(sequences.count == ids.count)
        #expect(sequences == sequences.sorted())
        #expect(sequences.map(RedisStreamID.id) == ids)
        #expect(RedisStreamID.sequence("1-4194304") == nil)
        #expect(RedisStreamID.sequence("4398046511104-0") == nil)
        #expect(RedisStreamID.sequence("12") == nil)
        #expect(RedisStreamID.date(RedisStreamID.sequence("1712345678901-3")!).timeIntervalSince1970 == 1712345678.901)
    }

    @Test("metadata: Dapr's pub/sub names, both duration forms, and clear refusals")
    func metadata() throws {
        let base = ["redisHost": "redis.local:6380", "redisPassword": "s3cret", "redisDB": "2", "poolSize": "4"]
        let parsed = try RedisMetadata(base, clientName: "hangard:pubsub:p")
        #expect(parsed.configuration.address == .tcp(host: "redis.local", port: 6380))
        #expect(parsed.options.maxConnections == 4)
        for (value, expected) in [("30s", Duration.seconds(30)), ("30000", .seconds(30)), ("1m", .seconds(60))] {
            let settings = try RedisPubSub.settings(
                ["processingTimeout": value, "redeliverInterval": value], commandTimeout: .seconds(1))
            #expect(settings.processingTimeout == expected && settings.redeliverInterval == expected)
        }
        let off = try RedisPubSub.settings(["processingTimeout": "0"], commandTimeout: .seconds(1))
        #expect(off.processingTimeout == .zero, "0 turns redelivery of others' entries off, as Dapr")
        let defaults = try RedisPubSub.settings([:], commandTimeout: .seconds(1))
        #expect(defaults.processingTimeout == .seconds(60) && defaults.redeliverInterval == .seconds(15))
        #expect(defaults.queueDepth == 100 && defaults.maxLenApprox == nil && defaults.streamTTL == nil)

        func refusal(_ metadata: [String: String]) -> ComponentDefinitionError? {
            do {
                _ = try RedisMetadata(metadata, clientName: "hangard:pubsub:p")
                _ = try RedisPubSub.settings(metadata, commandTimeout: .seconds(1))
                return nil
            } catch { return error }
        }
        #expect(refusal(base.merging(["redisType": "cluster"]) { $1 })?.field == "spec.metadata.redisType")
        #expect(refusal(base.merging(["processingTimeout": "soon"]) { $1 })?.field == "spec.metadata.processingTimeout")
        #expect(refusal(base.merging(["queueDepth": "0"]) { $1 })?.field == "spec.metadata.queueDepth")
        #expect(
            refusal(base.merging(["maxLenApprox": "10", "streamTTL": "1h"]) { $1 })?.field
                == "spec.metadata.streamTTL")
        #expect(refusal(base.merging(["redisType": "cluster"]) { $1 })?.description.contains("s3cret") == false)
        #expect(RedisPubSub.descriptor.metadata.contains { $0.name == "redisHost" && $0.required })
    }

    @Test("maxLenApprox trims the stream on publish, as Dapr's XADD MAXLEN ~ does (exactly, so that bytes are counted)")
    func maxLenApprox() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        var settings = RedisPubSub.Settings()
        settings.maxLenApprox = 10
        let pubsub = pubsub(server, settings: settings)
        let loop = group.next()
        defer { _ = pubsub.close(on: loop) }
        for index in 0..<1000 {
            _ = try await pubsub.publish(message("m\(index)"), to: "capped", on: loop).future(on: loop).get()
        }
        let admin = try await admin(server)
        defer { _ = admin.close() }
        guard case .integer(let length) = try await admin.send(["XLEN", "capped"], deadline: soon()).get() else {
            Issue.record("XLEN answered no integer")
            return
        }
        // Not `~` (whole nodes of the radix tree, 100 entries each by default): the publish's script removes exactly
        // what goes, so that byte accounting subtracts it.
        #expect(length == 10, "\(length) entries")
    }
}
