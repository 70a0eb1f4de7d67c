import Foundation
import HangarComponents
import HangarSQLite
import NIOCore
import Testing
import HangarSync

/// Behaviour every pub/sub component must show, whatever its backend: the semantics `PubSub` documents.
@Suite("Pub/sub conformance", .serialized)
struct PubSubConformanceTests {
    typealias Env = PubSubTestEnvironment

    static let orders = PubSubConsumer(group: "ns||checkout", topic: "ns||orders")

    @Test(
        "published messages are fetched with their data, content type and metadata, then acked",
        arguments: PubSubKind.allCases)
    func publishFetchAck(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            #expect(try await pubsub.ensureConsumer(consumer, on: loop).get() == 0)
            let before = Date()
            let message = PubSubMessage(
                data: Data(#"{"specversion":"1.0","data":"x"}"#.utf8), contentType: "application/cloudevents+json",
                metadata: ["traceparent": "00-abc-def-01", "pubsubName": "pubsub", "empty": ""])
            let first = try await pubsub.publish(message, to: consumer.topic, on: loop).get()
            let rest = try await pubsub.publish(["two", "three"], to: consumer.topic, on: loop)
            let sequences = [first] + rest
            expectSequences(kind, sequences, dense: [1, 2, 3])
            #expect(pubsub.lastSequence(of: consumer.topic) == sequences.last)
            #expect(pubsub.lastSequence(of: "ns||never-published") == 0)

            let deliveries = try await pubsub.fetch(consumer, on: loop)
            #expect(deliveries.map(\.sequence) == sequences)
            #expect(deliveries.map(\.attempt) == [1, 1, 1])
            let delivered = try #require(deliveries.first)
            #expect(delivered.message == message)
            #expect(delivered.expiresAt == nil)
            #expect(delivered.publishedAt >= before.addingTimeInterval(-1))
            #expect(delivered.publishedAt <= Date().addingTimeInterval(1))
            #expect(deliveries.dropFirst().map(Env.text) == ["two", "three"])

            #expect(try await pubsub.ack(consumer, deliveries.map(\.id), on: loop).get() == 3)
            #expect(try await pubsub.fetch(consumer, on: loop).isEmpty)
            #expect(try await pubsub.ack(consumer, deliveries.map(\.id), on: loop).get() == 0, "acked already")
        }
    }

    @Test(
        "one consumer receives a topic's messages in publish order, batch after batch", arguments: PubSubKind.allCases)
    func ordering(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let texts = (1...60).map { "m\($0)" }
            let published = try await pubsub.publish(texts, to: consumer.topic, on: loop)
            expectSequences(kind, published, dense: Array(1...60))
            _ = try await pubsub.publish(["elsewhere"], to: "ns||other", on: loop)
            var received: [PubSubDelivery] = []
            while true {
                let batch = try await pubsub.fetch(consumer, limit: 7, on: loop)
                #expect(batch.count <= 7)
                if batch.isEmpty { break }
                received += batch
                _ = try await pubsub.ack(consumer, batch.map(\.id), on: loop).get()
            }
            #expect(received.map(Env.text) == texts)
            #expect(received.map(\.sequence) == published)
        }
    }

    @Test(
        "a message not acked before its lease ends is delivered again, and the old delivery's ack is stale",
        arguments: PubSubKind.allCases)
    func redeliveryAfterLease(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish(["once"], to: consumer.topic, on: loop)
            let first = try #require(try await pubsub.fetch(consumer, lease: .milliseconds(100), on: loop).first)
            #expect(first.attempt == 1)
            try await Task.sleep(for: .milliseconds(300))
            let again = try await pubsub.fetch(consumer, on: loop)
            #expect(again.map(\.sequence) == [first.sequence])
            #expect(again.map(\.attempt) == [2])
            #expect(again.first?.message == first.message)
            #expect(try await pubsub.ack(consumer, [first.id], on: loop).get() == 0, "leased again since")
            #expect(try await pubsub.ack(consumer, again.map(\.id), on: loop).get() == 1)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await pubsub.fetch(consumer, on: loop).isEmpty, "acked: never again")
        }
    }

    @Test("a nacked message comes back after its retry delay with one more attempt", arguments: PubSubKind.allCases)
    func nack(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish(["retry me", "fine"], to: consumer.topic, on: loop)
            let deliveries = try await pubsub.fetch(consumer, on: loop)
            #expect(deliveries.count == 2)
            #expect(try await pubsub.ack(consumer, [deliveries[1].id], on: loop).get() == 1)

            #expect(try await pubsub.nack(consumer, [deliveries[0].id], retryAfter: .zero, on: loop).get() == 1)
            let second = try await pubsub.fetch(consumer, on: loop)
            #expect(second.map(\.sequence) == [deliveries[0].sequence])
            #expect(second.map(\.attempt) == [2])

            // A long delay: not before it, and the fetch says when.
            let nackedAt = Date()
            #expect(try await pubsub.nack(consumer, second.map(\.id), retryAfter: .seconds(600), on: loop).get() == 1)
            let result = try await pubsub.fetch(consumer, limit: 10, lease: nil, on: loop).get()
            #expect(result.deliveries.isEmpty)
            let next = try #require(result.nextRedeliveryAt)
            #expect(next > nackedAt.addingTimeInterval(500))

            // The same delivery id is still current: nacking it with no delay makes it visible now.
            #expect(try await pubsub.nack(consumer, second.map(\.id), retryAfter: .zero, on: loop).get() == 1)
            let third = try await pubsub.fetch(consumer, on: loop)
            #expect(third.map(\.attempt) == [3])
            #expect(third.map(Env.text) == ["retry me"])
            #expect(try await pubsub.nack(consumer, second.map(\.id), retryAfter: .zero, on: loop).get() == 0, "stale")
        }
    }

    @Test("competing consumers of one group each get different messages", arguments: PubSubKind.allCases)
    func competingConsumers(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish((1...10).map { "m\($0)" }, to: consumer.topic, on: loop)
            let replicaA = try await pubsub.fetch(consumer, limit: 4, on: loop)
            let replicaB = try await pubsub.fetch(consumer, limit: 4, on: loop)
            let replicaC = try await pubsub.fetch(consumer, limit: 4, on: loop)
            #expect(replicaA.count == 4 && replicaB.count == 4 && replicaC.count == 2)
            let all = (replicaA + replicaB + replicaC).map(\.sequence)
            #expect(Set(all).count == 10)
            #expect(try await pubsub.fetch(consumer, on: loop).isEmpty, "everything is leased")

            // Many replicas at once: no message goes to two of them.
            let later = try await pubsub.publish((11...60).map { "m\($0)" }, to: consumer.topic, on: loop)
            let received = try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for _ in 0..<6 {
                    group.addTask {
                        var mine: [UInt64] = []
                        while true {
                            let batch = try await pubsub.fetch(consumer, limit: 3, on: loop)
                            if batch.isEmpty { return mine }
                            mine += batch.map(\.sequence)
                        }
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(received.count == 50)
            #expect(Set(received) == Set(later))
        }
    }

    @Test(
        "each group receives every message (fan-out), and one group's acks do not touch the other",
        arguments: PubSubKind.allCases)
    func fanOut(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let billing = PubSubConsumer(group: "ns||billing", topic: Self.orders.topic)
            let shipping = PubSubConsumer(group: "ns||shipping", topic: Self.orders.topic)
            _ = try await pubsub.ensureConsumer(billing, on: loop).get()
            _ = try await pubsub.ensureConsumer(shipping, on: loop).get()
            _ = try await pubsub.publish(["a", "b", "c"], to: Self.orders.topic, on: loop)
            let toBilling = try await pubsub.fetch(billing, on: loop)
            #expect(toBilling.map(Env.text) == ["a", "b", "c"])
            #expect(try await pubsub.ack(billing, toBilling.map(\.id), on: loop).get() == 3)
            _ = try await pubsub.trim(on: loop).get()
            let toShipping = try await pubsub.fetch(shipping, on: loop)
            #expect(toShipping.map(Env.text) == ["a", "b", "c"])
            #expect(toShipping.map(\.attempt) == [1, 1, 1])
        }
    }

    @Test(
        "a group created late starts at the end of the log, and ensuring it again never moves it back",
        arguments: PubSubKind.allCases)
    func lateGroup(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let early = Self.orders
            let late = PubSubConsumer(group: "ns||late", topic: early.topic)
            _ = try await pubsub.ensureConsumer(early, on: loop).get()
            var published = try await pubsub.publish(["1", "2", "3"], to: early.topic, on: loop)
            #expect(try await pubsub.ensureConsumer(late, on: loop).get() == published[2])
            #expect(try await pubsub.fetch(late, on: loop).isEmpty)
            published += try await pubsub.publish(["4"], to: early.topic, on: loop)
            expectSequences(kind, published, dense: [1, 2, 3, 4])
            let toLate = try await pubsub.fetch(late, on: loop)
            #expect(toLate.map(\.sequence) == [published[3]])
            #expect(try await pubsub.ensureConsumer(late, on: loop).get() == published[3])
            let earlyCursor = try await pubsub.ensureConsumer(early, on: loop).get()
            #expect(
                kind.denseSequences ? earlyCursor == 0 : earlyCursor < published[0], "early has fetched nothing yet")
            #expect(try await pubsub.fetch(early, on: loop).map(\.sequence) == published)
        }
    }

    @Test(
        "a message whose TTL has passed is never delivered, nor redelivered, and is trimmed",
        arguments: PubSubKind.allCases)
    func ttl(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            #expect(pubsub.features.contains(.messageTTL))
            // Only lower bounds on time matter: what has expired must not be delivered.
            let topic = consumer.topic
            _ = try await pubsub.publish(Env.message("leased", ttl: .milliseconds(1500)), to: topic, on: loop).get()
            let first = try await pubsub.fetch(consumer, lease: .milliseconds(50), on: loop)
            #expect(first.map(Env.text) == ["leased"])
            let leased = try #require(first.first)
            let expiresAt = try #require(leased.expiresAt)
            #expect(expiresAt > leased.publishedAt)
            _ = try await pubsub.publish(Env.message("short", ttl: .milliseconds(100)), to: topic, on: loop).get()
            _ = try await pubsub.publish(Env.message("forever"), to: topic, on: loop).get()
            try await Task.sleep(for: .milliseconds(300))
            let second = try await pubsub.fetch(consumer, lease: .milliseconds(50), on: loop).map(Env.text)
            #expect(second.contains("forever") && !second.contains("short"))
            try await Task.sleep(for: .milliseconds(1600))
            #expect(
                try await pubsub.fetch(consumer, on: loop).map(Env.text) == ["forever"], "leased one expired meanwhile")
            let usage = pubsub.usageByTopic[consumer.topic] ?? 0
            #expect(try await pubsub.trim(on: loop).get() >= 2)
            #expect((pubsub.usageByTopic[consumer.topic] ?? 0) < usage)
        }
    }

    @Test("a bulk publish appends every message in order, with consecutive sequences", arguments: PubSubKind.allCases)
    func bulkPublish(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            #expect(pubsub.features.contains(.bulkPublish))
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let before = try await pubsub.publish(["before"], to: consumer.topic, on: loop)
            let messages = (1...50).map { Env.message("bulk \($0)") }
            let sequences = try await pubsub.publish(messages, to: consumer.topic, on: loop).get()
            expectSequences(kind, before + sequences, dense: Array(1...51))
            #expect(try await pubsub.publish([], to: consumer.topic, on: loop).get().isEmpty)
            let deliveries = try await pubsub.fetch(consumer, on: loop)
            #expect(deliveries.map(Env.text) == ["before"] + (1...50).map { "bulk \($0)" })
        }
    }

    @Test(
        "a publish that would exceed maxRetainedBytes fails whole and changes nothing",
        arguments: PubSubKind.accountingKinds)
    func full(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind, limits: Env.limits(maxRetainedBytes: 1000)) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let big = PubSubMessage(data: Data(count: 300))
            let first = try await pubsub.publish([big, big], to: consumer.topic, on: loop).get()
            await #expect(throws: PubSubError.full(usage: 1200, limit: 1000)) {
                try await pubsub.publish([big, big], to: consumer.topic, on: loop).get()
            }
            #expect(pubsub.lastSequence(of: consumer.topic) == first.last)
            #expect(pubsub.usageByTopic == [consumer.topic: 600])
            // Once consumed, the messages no longer count: the publish trims them to make room.
            let deliveries = try await pubsub.fetch(consumer, on: loop)
            _ = try await pubsub.ack(consumer, deliveries.map(\.id), on: loop).get()
            let second = try await pubsub.publish([big, big], to: consumer.topic, on: loop).get()
            expectSequences(kind, first + second, dense: [1, 2, 3, 4])
            #expect(pubsub.usageByTopic == [consumer.topic: 600])
        }
    }

    @Test("1 MiB messages round-trip intact", arguments: PubSubKind.allCases)
    func largeMessages(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            var generator = SystemRandomNumberGenerator()
            let payloads = (0..<3).map { _ in
                var data = Data(capacity: 1 << 20)
                for _ in 0..<((1 << 20) / 8) { withUnsafeBytes(of: generator.next()) { data.append(contentsOf: $0) } }
                return data
            }
            let messages = payloads.map { PubSubMessage(data: $0, contentType: "application/octet-stream") }
            _ = try await pubsub.publish(messages[0], to: consumer.topic, on: loop).get()
            _ = try await pubsub.publish(Array(messages[1...]), to: consumer.topic, on: loop).get()
            let deliveries = try await pubsub.fetch(consumer, on: loop)
            #expect(deliveries.map(\.message.data) == payloads)
            #expect(pubsub.usageByTopic[consumer.topic] == 3 * ((1 << 20) + "application/octet-stream".utf8.count))
        }
    }

    @Test(
        "trimming removes what every group acknowledged, and everything of a topic with no group; sequences go on",
        arguments: PubSubKind.allCases)
    func trimConsumed(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let a = Self.orders
            let b = PubSubConsumer(group: "ns||b", topic: a.topic)
            _ = try await pubsub.ensureConsumer(a, on: loop).get()
            _ = try await pubsub.ensureConsumer(b, on: loop).get()
            let published = try await pubsub.publish(["1", "2", "3", "4"], to: a.topic, on: loop)
            let toA = try await pubsub.fetch(a, on: loop)
            _ = try await pubsub.ack(a, toA.map(\.id), on: loop).get()
            let toB = try await pubsub.fetch(b, limit: 3, on: loop)
            _ = try await pubsub.ack(b, [toB[0].id, toB[2].id], on: loop).get()
            // b still has 2 pending and 4 unfetched: only 1 is consumed by both.
            #expect(try await pubsub.trim(on: loop).get() == 1)
            #expect(try await pubsub.fetch(b, on: loop).map(\.sequence) == [published[3]])

            let lonely = try await pubsub.publish(["x", "y"], to: "ns||lonely", on: loop)
            // Redis leaves a stream no group reads alone: a Dapr app may create its group later, from the start.
            #expect(try await pubsub.trim(on: loop).get() == (kind.trimsTopicsWithoutConsumers ? 2 : 0))
            let lonelyBytes = 2 * Env.message("x").byteCount
            #expect(pubsub.usageByTopic["ns||lonely"] == (kind.trimsTopicsWithoutConsumers ? nil : lonelyBytes))
            #expect(pubsub.lastSequence(of: "ns||lonely") == lonely[1])
            let z = try await pubsub.publish(["z"], to: "ns||lonely", on: loop)
            #expect(z.count == 1 && z[0] > lonely[1], "sequences are never reused")
            expectSequences(kind, lonely + z, dense: [1, 2, 3])

            // A removed group holds nothing back.
            try await pubsub.removeConsumer(b, on: loop).get()
            await #expect(throws: PubSubError.unknownConsumer(b)) { try await pubsub.fetch(b, on: loop) }
            _ = try await pubsub.trim(on: loop).get()
            #expect(pubsub.usageByTopic[a.topic] == nil)
        }
    }

    @Test("retention by age removes old messages even when unacknowledged", arguments: PubSubKind.retentionKinds)
    func retentionByAge(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind, limits: Env.limits(retentionPeriod: .milliseconds(200))) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            _ = try await pubsub.publish(["old 1", "old 2", "old 3"], to: consumer.topic, on: loop)
            let leased = try await pubsub.fetch(consumer, limit: 1, lease: .milliseconds(1), on: loop)
            #expect(leased.map(Env.text) == ["old 1"])
            try await Task.sleep(for: .milliseconds(400))
            _ = try await pubsub.publish(["new"], to: consumer.topic, on: loop)
            #expect(try await pubsub.trim(on: loop).get() == 3)
            #expect(pubsub.usageByTopic[consumer.topic] == Env.message("new").byteCount)
            #expect(try await pubsub.fetch(consumer, on: loop).map(Env.text) == ["new"], "the pending one is gone too")
        }
    }

    @Test(
        "retention by size removes a topic's oldest messages as it publishes, keeping the new ones",
        arguments: PubSubKind.retentionKinds)
    func retentionBySize(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind, limits: Env.limits(maxTopicBytes: 2500)) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let kilobyte = PubSubMessage(data: Data(count: 1000))
            for _ in 0..<5 {
                _ = try await pubsub.publish(kilobyte, to: consumer.topic, on: loop).get()
                #expect((pubsub.usageByTopic[consumer.topic] ?? 0) <= 2500)
            }
            #expect(pubsub.usageByTopic[consumer.topic] == 2000)
            let other = try await pubsub.publish([kilobyte], to: "ns||other", on: loop).get()
            #expect(other == [1], "other topics are untouched")
            #expect(try await pubsub.fetch(consumer, on: loop).map(\.sequence) == [4, 5])
            // A publish larger than the limit by itself could never be kept whole: it is refused, nothing changes.
            await #expect(throws: PubSubError.tooLarge(bytes: 3000, limit: 2500, setting: "maxTopicBytes")) {
                try await pubsub.publish([kilobyte, kilobyte, kilobyte], to: consumer.topic, on: loop).get()
            }
            #expect(pubsub.usageByTopic[consumer.topic] == 2000)
            #expect(pubsub.lastSequence(of: consumer.topic) == 5)
            // One that fits exactly pushes everything older out, and the topic never holds more than the limit.
            let exact = PubSubMessage(data: Data(count: 2500))
            #expect(try await pubsub.publish(exact, to: consumer.topic, on: loop).get() == 6)
            #expect(pubsub.usageByTopic[consumer.topic] == 2500)
        }
    }

    @Test("concurrent publishers lose no message and never share a sequence", arguments: PubSubKind.allCases)
    func concurrentPublishers(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let consumer = Self.orders
            _ = try await pubsub.ensureConsumer(consumer, on: loop).get()
            let publishers = 8
            let each = 150
            let sequences = try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for publisher in 0..<publishers {
                    group.addTask {
                        let loop = PubSubTestEnvironment.group.next()
                        // Fired together, not one after the other, so that they meet in the component.
                        let futures = (0..<each).map { index in
                            pubsub.publish(Env.message("\(publisher)/\(index)"), to: consumer.topic, on: loop)
                                .future(on: loop)
                        }
                        var sequences: [UInt64] = []
                        for future in futures { sequences.append(try await future.get()) }
                        #expect(sequences == sequences.sorted(), "one publisher's messages keep their order")
                        return sequences
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            let total = publishers * each
            expectSequences(kind, sequences.sorted(), dense: Array(1...UInt64(total)))
            #expect(Set(sequences).count == total)
            #expect(pubsub.lastSequence(of: consumer.topic) == sequences.max())
            let deliveries = try await pubsub.fetch(consumer, limit: total + 10, on: loop)
            #expect(deliveries.map(\.sequence) == sequences.sorted())
            #expect(Set(deliveries.map(Env.text)).count == total)
        }
    }

    @Test(
        "observers and waiters hear of each publish to their topic, and a finished wait leaves nothing behind",
        arguments: PubSubKind.allCases)
    func notification(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let topic = Self.orders.topic
            let heard = Locked<[UInt64]>([])
            let observation = pubsub.observe(topic: topic) { last in heard.withLock { $0.append(last) } }
            let waiting = pubsub.waitForPublish(to: topic, beyond: 0, timeout: nil, on: loop)
            _ = try await pubsub.publish(["one"], to: "ns||elsewhere", on: loop)
            let one = try await pubsub.publish(["one"], to: topic, on: loop)
            #expect(try await waiting.get())
            let three = try await pubsub.publish([Env.message("two"), Env.message("three")], to: topic, on: loop).get()
            // The handler runs after the commit, possibly just after the publish's future completed.
            for _ in 0..<500 where heard.withLock({ $0.count }) < 2 { try await Task.sleep(for: .milliseconds(10)) }
            #expect(heard.withLock { $0 } == [one[0], three[1]], "once per commit, with the topic's last sequence")
            expectSequences(kind, one + three, dense: [1, 2, 3])
            observation.cancel()
            let four = try await pubsub.publish(["four"], to: topic, on: loop)[0]
            try await Task.sleep(for: .milliseconds(50))
            #expect(heard.withLock { $0 } == [one[0], three[1]], "nothing after cancel")

            #expect(
                try await pubsub.waitForPublish(to: topic, beyond: three[1], timeout: nil, on: loop).get(),
                "already there")
            #expect(
                try await pubsub.waitForPublish(to: topic, beyond: four, timeout: .milliseconds(50), on: loop).get()
                    == false)
            let later = pubsub.waitForPublish(to: topic, beyond: four, timeout: .seconds(600), on: loop)
            _ = try await pubsub.publish(["five"], to: topic, on: loop)
            #expect(try await later.get())
            try await loop.submit {}.get()  // The waiter cancels its observation on the loop, after completing.
            #expect(pubsub.registeredObservers == 0)
        }
    }

    @Test("a waiter without a timeout wakes when the component closes, and leaves nothing behind",
        arguments: PubSubKind.allCases)
    func waiterWakesOnClose(kind: PubSubKind) async throws {
        var waiting: EventLoopFuture<Bool>?
        var component: (any PubSub)?
        try await Env.withPubSub(kind) { pubsub, loop in
            waiting = pubsub.waitForPublish(to: Self.orders.topic, beyond: 0, timeout: nil, on: loop)
            component = pubsub
            #expect(pubsub.registeredObservers == 1)
        }
        #expect(try await waiting?.get() == true, "woken by the close: its next operation finds it closed")
        #expect(component?.registeredObservers == 0)
    }

    @Test("bad arguments and unknown consumers are refused with clear errors", arguments: PubSubKind.allCases)
    func refusals(kind: PubSubKind) async throws {
        try await Env.withPubSub(kind) { pubsub, loop in
            let ghost = PubSubConsumer(group: "ns||ghost", topic: Self.orders.topic)
            await #expect(throws: PubSubError.unknownConsumer(ghost)) { try await pubsub.fetch(ghost, on: loop) }
            await #expect(throws: PubSubError.unknownConsumer(ghost)) {
                try await pubsub.ack(ghost, [PubSubDeliveryID(sequence: 1, attempt: 1)], on: loop).get()
            }
            await #expect(throws: PubSubError.unknownConsumer(ghost)) {
                try await pubsub.nack(ghost, [], retryAfter: .zero, on: loop).get()
            }
            await #expect(throws: PubSubError.invalidArgument("the topic is empty")) {
                try await pubsub.publish(["x"], to: "", on: loop)
            }
            _ = try await pubsub.ensureConsumer(Self.orders, on: loop).get()
            await #expect(throws: PubSubError.invalidArgument("the fetch limit must be positive, not 0")) {
                try await pubsub.fetch(Self.orders, limit: 0, on: loop)
            }
            try await pubsub.removeConsumer(ghost, on: loop).get()
            // The component still works after every refusal.
            _ = try await pubsub.publish(["x"], to: Self.orders.topic, on: loop)
            #expect(try await pubsub.fetch(Self.orders, on: loop).count == 1)
        }
    }

    @Test("a closed component refuses every operation", arguments: PubSubKind.allCases)
    func closed(kind: PubSubKind) async throws {
        let directory = try StateTestEnvironment.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let loop = PubSubTestEnvironment.group.next()
        let pubsub = try Env.open(kind, path: directory.appendingPathComponent("p.db").path, limits: Env.limits())
        _ = try await pubsub.ensureConsumer(Self.orders, on: loop).get()
        try await pubsub.close(on: loop).get()
        try await pubsub.close(on: loop).get()
        await #expect(throws: PubSubError.closed) { try await pubsub.publish(["x"], to: Self.orders.topic, on: loop) }
        await #expect(throws: PubSubError.closed) { try await pubsub.fetch(Self.orders, on: loop) }
        await #expect(throws: PubSubError.closed) { try await pubsub.trim(on: loop).get() }
    }
}
