import Foundation
import HangarComponents
import HangarSQLite
import NIOCore
import Testing

/// The byte limits every pub/sub component enforces the same way: per-partition totals kept as topics change, the
/// publish's `partitionLimit` (the runtime's `maxPubsubBytes`) holding under concurrent publishes, publishes too
/// large to ever fit, and a full component trimming for room only when that can help.
@Suite("Pub/sub limits conformance", .serialized)
struct PubSubLimitsConformanceTests {
    typealias Env = PubSubTestEnvironment

    /// `usageByTopic` summed by the part of each topic before `||`: what `usageByPartition` must always equal.
    static func summed(_ pubsub: any PubSub) -> [String: Int] {
        var partitions: [String: Int] = [:]
        for (topic, bytes) in pubsub.usageByTopic { partitions[PubSubPartition.of(topic), default: 0] += bytes }
        return partitions
    }

    @Test(
        "usage by partition is kept as topics grow and shrink, and matches the topics' usage summed",
        arguments: PubSubKind.accountingKinds)
    func partitionTotals(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind, limits: Env.limits(maxTopicBytes: 2000)) { pubsub, loop in
            let a = PubSubConsumer(group: "a||g", topic: "a||orders")
            _ = try await pubsub.ensureConsumer(a, on: loop).get()
            #expect(pubsub.usageByPartition == [:])
            _ = try await pubsub.publish(["12345", "678"], to: a.topic, on: loop)
            _ = try await pubsub.publish(["x"], to: "a||other", on: loop)
            _ = try await pubsub.publish(["yy"], to: "b||orders", on: loop)
            _ = try await pubsub.publish(["no partition"], to: "plain", on: loop)
            let text = "text/plain".utf8.count
            #expect(pubsub.usageByPartition == ["a": 9 + 3 * text, "b": 2 + text, "plain": 12 + text])
            #expect(pubsub.usageByPartition == Self.summed(pubsub))
            #expect(pubsub.retainedBytes(inPartition: "a") == 9 + 3 * text)
            #expect(pubsub.retainedBytes(inPartition: "nobody") == 0)

            // Retention by size (where the component has it), consumption and trimming all take bytes off the
            // partition.
            _ = try await pubsub.publish(PubSubMessage(data: Data(count: 1990)), to: a.topic, on: loop).get()
            #expect(pubsub.usageByPartition == Self.summed(pubsub))
            let deliveries = try await pubsub.fetch(a, on: loop)
            _ = try await pubsub.ack(a, deliveries.map(\.id), on: loop).get()
            _ = try await pubsub.trim(on: loop).get()
            if kind.trimsTopicsWithoutConsumers {
                #expect(pubsub.usageByPartition == [:], "every topic was consumed or had no consumer")
                #expect(pubsub.retainedBytes(inPartition: "a") == 0)
            } else {
                #expect(pubsub.usageByPartition == ["a": 1 + text, "b": 2 + text, "plain": 12 + text])
                #expect(pubsub.usageByTopic[a.topic] == nil, "consumed")
            }
            #expect(pubsub.usageByPartition == Self.summed(pubsub))
        }
    }

    @Test(
        "a partition limit refuses what would take the partition above it, even among concurrent publishes",
        arguments: PubSubKind.accountingKinds)
    func partitionLimit(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            for topic in ["t||a", "t||b", "u||a"] {
                _ = try await pubsub.ensureConsumer(PubSubConsumer(group: "g", topic: topic), on: loop).get()
            }
            let message = PubSubMessage(data: Data(count: 300))
            // Fired together: on a component that commits later, none has committed when the others are checked.
            let futures = (0..<20).map { index in
                pubsub.publish([message], to: index.isMultiple(of: 2) ? "t||a" : "t||b", partitionLimit: 1000, on: loop)
                    .future(on: loop)
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
            #expect(accepted == 3)
            #expect(refusals.count == 17)
            #expect(refusals.allSatisfy { $0 == .partitionFull(partition: "t", usage: 1200, limit: 1000) })
            #expect(pubsub.usageByPartition == ["t": 900])
            // Another partition has its own total; no limit means none.
            _ = try await pubsub.publish([message], to: "u||a", partitionLimit: 300, on: loop).get()
            _ = try await pubsub.publish([message, message], to: "t||a", on: loop).get()
            #expect(pubsub.usageByPartition == ["t": 1500, "u": 300])
        }
    }

    @Test(
        "a publish larger than maxRetainedBytes by itself is refused as too large, without trimming",
        arguments: PubSubKind.accountingKinds)
    func tooLarge(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind, limits: Env.limits(maxRetainedBytes: 1000)) { pubsub, loop in
            let consumer = PubSubConsumer(group: "ns||g", topic: "ns||t")
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            await #expect(throws: PubSubError.tooLarge(bytes: 1001, limit: 1000, setting: "maxRetainedBytes")) {
                try await pubsub.publish(PubSubMessage(data: Data(count: 1001)), to: consumer.topic, on: loop).get()
            }
            #expect(pubsub.roomTrims == 0)
            #expect(pubsub.lastSequence(of: consumer.topic) == 0)
            let sequence = try await pubsub.publish(
                PubSubMessage(data: Data(count: 1000)), to: consumer.topic, on: loop
            )
            .get()
            expectSequences(kind, [sequence], dense: [1])
        }
    }

    @Test(
        "a full component trims for room once, then refuses at once until an ack (or time) can have freed some",
        arguments: PubSubKind.accountingKinds)
    func trimsOnlyWhenItCanHelp(kind: PubSubKind) async throws {
        let limits = Env.limits(maxRetainedBytes: 1000, fullTrimInterval: .seconds(3600))
        try await Env.withPubSub(kind, limits: limits) { pubsub, loop in
            let consumer = PubSubConsumer(group: "ns||g", topic: "ns||t")
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let big = PubSubMessage(data: Data(count: 600))
            let first = try await pubsub.publish(big, to: consumer.topic, on: loop).get()
            // Unacknowledged, the first message cannot be trimmed: 50 refused publishes cost one trim, not 50.
            for _ in 0..<50 {
                await #expect(throws: PubSubError.full(usage: 1200, limit: 1000)) {
                    try await pubsub.publish(big, to: consumer.topic, on: loop).get()
                }
            }
            #expect(pubsub.roomTrims == 1)
            // Concurrent refused publishes (one batch on a batching component) trim no more.
            let futures = (0..<20).map { _ in pubsub.publish(big, to: consumer.topic, on: loop).future(on: loop) }
            for future in futures { _ = try? await future.get() }
            #expect(pubsub.roomTrims == 1)

            // An ack can free room: the next refused publish trims again, and goes through.
            let deliveries = try await pubsub.fetch(consumer, on: loop)
            #expect(try await pubsub.ack(consumer, deliveries.map(\.id), on: loop).get() == 1)
            let second = try await pubsub.publish(big, to: consumer.topic, on: loop).get()
            expectSequences(kind, [first, second], dense: [1, 2])
            #expect(pubsub.roomTrims == 2)
            #expect(pubsub.usageByTopic == [consumer.topic: 600])
        }
    }

    @Test(
        "without an ack, a full component trims again once fullTrimInterval has passed (TTLs, age)",
        arguments: PubSubKind.accountingKinds)
    func trimsAgainAfterTheInterval(kind: PubSubKind) async throws {
        let limits = Env.limits(maxRetainedBytes: 1000, fullTrimInterval: .milliseconds(200))
        try await Env.withPubSub(kind, limits: limits) { pubsub, loop in
            let consumer = PubSubConsumer(group: "ns||g", topic: "ns||t")
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish(
                PubSubMessage(data: Data(count: 600), ttl: .milliseconds(100)), to: consumer.topic, on: loop
            ).get()
            let big = PubSubMessage(data: Data(count: 600))
            // However fast this runs, the message expires and a trim after the interval removes it.
            var sequence: UInt64?
            for _ in 0..<200 where sequence == nil {
                sequence = try? await pubsub.publish(big, to: consumer.topic, on: loop).get()
                if sequence == nil { try await Task.sleep(for: .milliseconds(20)) }
            }
            if kind.denseSequences { #expect(sequence == 2) } else { #expect(sequence != nil) }
            #expect((pubsub.roomTrims ?? 0) >= 2)
        }
    }
}
