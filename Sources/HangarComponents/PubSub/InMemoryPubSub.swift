import Foundation
package import NIOCore
import HangarSync

/// `pubsub.in-memory`: topics, consumers and pending messages in dictionaries behind one mutex. Every operation is
/// non-blocking and answers at once on the caller's event loop. Not durable: everything is lost when the daemon
/// stops. Memory is bounded by `maxRetainedBytes` (64 MiB unless set): a publish that would exceed it, even after
/// `trim` removed what it could, fails with `PubSubError.full`.
///
/// Semantics are those of `PubSub`, the same as `pubsub.sqlite`'s (one conformance suite runs against both).
package final class InMemoryPubSub: PubSub {
    private struct Stored {
        var message: PubSubMessage
        var publishedAt: Date
        var expiresAt: Date?
        var bytes: Int

        func isExpired(now: Date) -> Bool { expiresAt.map { $0 <= now } ?? false }
    }

    private struct Pending {
        /// The attempt of the latest delivery: what an ack or nack must name.
        var attempt: Int
        var visibleAt: Date
    }

    private struct Consumer {
        /// The last sequence handed to this consumer (or skipped as expired).
        var cursor: UInt64
        var pending: [UInt64: Pending] = [:]
    }

    private struct Topic {
        var last: UInt64 = 0
        /// No message below this sequence is present (a lower bound: holes may follow it).
        var first: UInt64 = 1
        var messages: [UInt64: Stored] = [:]
        var bytes = 0
        var consumers: [String: Consumer] = [:]

        /// Removes one message and returns its bytes (0 when absent).
        mutating func remove(_ sequence: UInt64) -> Int {
            guard let stored = messages.removeValue(forKey: sequence) else { return 0 }
            bytes -= stored.bytes
            while first <= last && messages[first] == nil { first += 1 }
            return stored.bytes
        }

        /// Removes messages from the oldest while `condition` holds for them; returns (count, bytes).
        mutating func removeOldest(while condition: (UInt64, Stored) -> Bool) -> (count: Int, bytes: Int) {
            var count = 0
            var freed = 0
            while first <= last {
                guard let stored = messages[first] else {
                    first += 1
                    continue
                }
                guard condition(first, stored) else { break }
                freed += remove(first)
                count += 1
            }
            return (count, freed)
        }

        /// The highest sequence every consumer has acknowledged (everything, when there is no consumer).
        var consumedUpTo: UInt64 {
            var watermark = last
            for consumer in consumers.values {
                let settled = consumer.pending.keys.min().map { $0 - 1 } ?? consumer.cursor
                watermark = min(watermark, settled, consumer.cursor)
            }
            return watermark
        }
    }

    private struct State {
        var topics: [String: Topic] = [:]
        var bytes = 0
        /// `bytes` by partition (`PubSubPartition`), kept as topics change; emptied partitions are removed.
        var partitions: [String: Int] = [:]
        var gate: PubSubTrimGate
        var closed = false

        /// Adds `delta` bytes (negative: removes) to the component's and the topic's partition's totals.
        mutating func account(_ delta: Int, of topic: String) {
            guard delta != 0 else { return }
            bytes += delta
            let partition = PubSubPartition.of(topic)
            let total = partitions[partition, default: 0] + delta
            partitions[partition] = total > 0 ? total : nil
        }

        /// Runs retention on every topic; returns how many messages it removed.
        @discardableResult
        mutating func trim(limits: PubSubLimits, now: Date) -> Int {
            var removed = 0
            let oldestKept = limits.retentionPeriod.map { now.addingTimeInterval(-$0.seconds) }
            for name in Array(topics.keys) {
                // Taken out and put back, so that changing it does not copy its dictionaries.
                guard var topic = topics.removeValue(forKey: name) else { continue }
                var freed = 0
                let expired = topic.messages.compactMap { $0.value.isExpired(now: now) ? $0.key : nil }
                for sequence in expired { freed += topic.remove(sequence) }
                removed += expired.count
                if let oldestKept {
                    let old = topic.removeOldest { $1.publishedAt < oldestKept }
                    removed += old.count
                    freed += old.bytes
                }
                // Pending entries of removed messages would hold back the watermark for ever.
                for (group, var consumer) in topic.consumers {
                    let before = consumer.pending.count
                    consumer.pending = consumer.pending.filter { topic.messages[$0.key] != nil }
                    if consumer.pending.count != before { topic.consumers[group] = consumer }
                }
                let watermark = topic.consumedUpTo
                let consumed = topic.removeOldest { sequence, _ in sequence <= watermark }
                removed += consumed.count
                freed += consumed.bytes
                account(-freed, of: name)
                topics[name] = topic
            }
            gate.trimmed(now: Int64((now.timeIntervalSince1970 * 1000).rounded(.down)))
            return removed
        }
    }

    private let state: Locked<State>
    private let observers = PubSubTopicObservers()
    private let cleanup = Locked<RepeatedTask?>(nil)
    /// The limits the component was created with.
    package let limits: PubSubLimits
    package var ackTimeout: Duration { limits.ackTimeout }

    /// TTL and bulk publish; not durable.
    package let features: PubSubFeatures = [.messageTTL, .bulkPublish]
    /// Always true: every operation is `.ready` when it returns.
    package var executesInline: Bool { true }

    /// The limits of a `pubsub.in-memory` whose metadata sets none: those of `PubSubLimits`, and 64 MiB in all.
    package static let defaultLimits = PubSubLimits(maxRetainedBytes: 64 << 20)

    /// A component with `limits`; with an `eventLoopGroup` and a `cleanupInterval`, `trim` runs periodically.
    package init(limits: PubSubLimits = InMemoryPubSub.defaultLimits, eventLoopGroup: (any EventLoopGroup)? = nil) {
        self.limits = limits
        self.state = Locked(State(gate: PubSubTrimGate(interval: limits.fullTrimInterval)))
        if let interval = limits.cleanupInterval, let eventLoop = eventLoopGroup?.next() {
            let task = eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) {
                [weak self] task in
                guard let self else { return task.cancel() }
                _ = self.trim(on: eventLoop)
            }
            cleanup.withLock { $0 = task }
        }
    }

    package var usageByTopic: [String: Int] {
        state.withLock { state in
            state.topics.compactMapValues { $0.bytes > 0 ? $0.bytes : nil }
        }
    }

    package var usageByPartition: [String: Int] { state.withLock { $0.partitions } }

    package func retainedBytes(inPartition partition: String) -> Int {
        state.withLock { $0.partitions[partition] ?? 0 }
    }

    /// How many trims refused publishes ran (see `PubSubTrimGate`; for tests).
    package var trimsForRoom: Int { state.withLock { $0.gate.trimsForRoom } }

    package func lastSequence(of topic: String) -> UInt64 {
        state.withLock { $0.topics[topic]?.last ?? 0 }
    }

    package func publish(
        _ messages: [PubSubMessage], to topic: String, partitionLimit: Int?, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]> {
        let limits = self.limits
        let outcome = Result { () throws(PubSubError) -> [UInt64] in
            guard !topic.isEmpty else { throw .invalidArgument("the topic is empty") }
            let bytes = messages.reduce(0) { $0 + $1.byteCount }
            if let refusal = limits.refusalOfSize(bytes) { throw refusal }
            let partition = PubSubPartition.of(topic)
            return try state.withLock { state throws(PubSubError) -> [UInt64] in
                guard !state.closed else { throw .closed }
                let now = Date()
                state.gate.begin()
                func refusal(_ state: State) -> PubSubError? {
                    if let limit = partitionLimit, (state.partitions[partition] ?? 0) + bytes > limit {
                        return .partitionFull(
                            partition: partition, usage: (state.partitions[partition] ?? 0) + bytes, limit: limit)
                    }
                    if let limit = limits.maxRetainedBytes, state.bytes + bytes > limit {
                        return .full(usage: state.bytes + bytes, limit: limit)
                    }
                    return nil
                }
                // Room is made by trimming only when the gate says it can help (not for every refused publish).
                if refusal(state) != nil,
                    state.gate.shouldTrim(now: Int64((now.timeIntervalSince1970 * 1000).rounded(.down)))
                {
                    state.trim(limits: limits, now: now)
                }
                if let refused = refusal(state) { throw refused }
                // Taken out and put back, so that appending does not copy the topic's dictionaries.
                var entry = state.topics.removeValue(forKey: topic) ?? Topic()
                let firstNew = entry.last + 1
                var sequences: [UInt64] = []
                sequences.reserveCapacity(messages.count)
                for message in messages {
                    entry.last += 1
                    let stored = Stored(
                        message: message, publishedAt: now,
                        expiresAt: message.ttl.map { now.addingTimeInterval($0.seconds) }, bytes: message.byteCount)
                    entry.messages[entry.last] = stored
                    entry.bytes += stored.bytes
                    sequences.append(entry.last)
                }
                var freed = 0
                if let limit = limits.maxTopicBytes, entry.bytes > limit {
                    // The oldest go first; this publish's own messages stay.
                    var excess = entry.bytes - limit
                    freed =
                        entry.removeOldest { sequence, stored in
                            guard excess > 0 && sequence < firstNew else { return false }
                            excess -= stored.bytes
                            return true
                        }.bytes
                }
                state.account(bytes - freed, of: topic)
                state.topics[topic] = entry
                return sequences
            }
        }
        if case .success(let sequences) = outcome, let last = sequences.last {
            observers.notify([(topic, last)])
        }
        return .ready(outcome.mapError { $0 as any Error })
    }

    package func ensureConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<UInt64> {
        Eventual {
            guard !consumer.topic.isEmpty else { throw PubSubError.invalidArgument("the topic is empty") }
            return try state.withLock { state throws(PubSubError) -> UInt64 in
                guard !state.closed else { throw .closed }
                if let existing = state.topics[consumer.topic]?.consumers[consumer.group] { return existing.cursor }
                let last = state.topics[consumer.topic]?.last ?? 0
                state.topics[consumer.topic, default: Topic()].consumers[consumer.group] = Consumer(cursor: last)
                return last
            }
        }
    }

    package func removeConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<Void> {
        Eventual {
            try state.withLock { state throws(PubSubError) in
                guard !state.closed else { throw .closed }
                state.topics[consumer.topic]?.consumers[consumer.group] = nil
            }
        }
    }

    package func fetch(
        _ consumer: PubSubConsumer, limit: Int, lease: Duration?, on eventLoop: any EventLoop
    ) -> Eventual<PubSubFetchResult> {
        let lease = (lease ?? limits.ackTimeout).seconds
        return Eventual {
            guard limit > 0 else { throw PubSubError.invalidArgument("the fetch limit must be positive, not \(limit)") }
            return try withConsumer(consumer) { topic, entry, _ throws(PubSubError) -> PubSubFetchResult in
                let now = Date()
                let visibleAt = now.addingTimeInterval(lease)
                var deliveries: [PubSubDelivery] = []
                let due = entry.pending.filter { $0.value.visibleAt <= now }.keys.sorted()
                for sequence in due where deliveries.count < limit {
                    guard let stored = topic.messages[sequence], !stored.isExpired(now: now),
                        let pending = entry.pending[sequence]
                    else {
                        entry.pending[sequence] = nil
                        continue
                    }
                    entry.pending[sequence] = Pending(attempt: pending.attempt + 1, visibleAt: visibleAt)
                    deliveries.append(Self.delivery(sequence, attempt: pending.attempt + 1, stored))
                }
                var sequence = max(entry.cursor + 1, topic.first)
                while deliveries.count < limit && sequence <= topic.last {
                    if let stored = topic.messages[sequence], !stored.isExpired(now: now) {
                        entry.pending[sequence] = Pending(attempt: 1, visibleAt: visibleAt)
                        deliveries.append(Self.delivery(sequence, attempt: 1, stored))
                    }
                    entry.cursor = sequence
                    sequence += 1
                }
                let next =
                    deliveries.count < limit
                    ? entry.pending.values.lazy.map(\.visibleAt).filter { $0 > now }.min() : nil
                return PubSubFetchResult(deliveries: deliveries, nextRedeliveryAt: next)
            }
        }
    }

    package func ack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        Eventual {
            try withConsumer(consumer) { _, entry, gate throws(PubSubError) -> Int in
                var count = 0
                for id in ids where entry.pending[id.sequence]?.attempt == id.attempt {
                    entry.pending[id.sequence] = nil
                    count += 1
                }
                if count > 0 { gate.settled() }
                return count
            }
        }
    }

    package func nack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], retryAfter: Duration, on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        Eventual {
            try withConsumer(consumer) { _, entry, _ throws(PubSubError) -> Int in
                let visibleAt = Date().addingTimeInterval(max(retryAfter, .zero).seconds)
                var count = 0
                for id in ids where entry.pending[id.sequence]?.attempt == id.attempt {
                    entry.pending[id.sequence]?.visibleAt = visibleAt
                    count += 1
                }
                return count
            }
        }
    }

    package func trim(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let limits = self.limits
        return eventLoop.makeCompletedFuture {
            try state.withLock { state throws(PubSubError) -> Int in
                guard !state.closed else { throw .closed }
                return state.trim(limits: limits, now: Date())
            }
        }
    }

    package func observe(topic: String, _ handler: @escaping @Sendable (UInt64) -> Void) -> PubSubObservation {
        observers.observe(topic: topic, handler)
    }

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        cleanup.withLock { task in
            task?.cancel()
            task = nil
        }
        state.withLock { state in
            state.closed = true
            state.topics = [:]
            state.bytes = 0
            state.partitions = [:]
        }
        observers.close()
        return eventLoop.makeSucceededVoidFuture()
    }

    /// How many observations are registered (for tests).
    package var observerCount: Int { observers.count }

    /// Runs `body` on a consumer and its topic (and the trim gate, for acks) under the lock, storing the consumer
    /// back afterwards.
    private func withConsumer<Value>(
        _ consumer: PubSubConsumer, _ body: (Topic, inout Consumer, inout PubSubTrimGate) throws(PubSubError) -> Value
    ) throws(PubSubError) -> Value {
        try state.withLock { state throws(PubSubError) -> Value in
            guard !state.closed else { throw .closed }
            // The consumer is taken out and put back, so that changing it does not copy its pending dictionary.
            guard var entry = state.topics[consumer.topic]?.consumers.removeValue(forKey: consumer.group),
                let topic = state.topics[consumer.topic]
            else { throw .unknownConsumer(consumer) }
            defer { state.topics[consumer.topic]?.consumers[consumer.group] = entry }
            return try body(topic, &entry, &state.gate)
        }
    }

    private static func delivery(_ sequence: UInt64, attempt: Int, _ stored: Stored) -> PubSubDelivery {
        PubSubDelivery(
            sequence: sequence, attempt: attempt, message: stored.message, publishedAt: stored.publishedAt,
            expiresAt: stored.expiresAt)
    }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var seconds: TimeInterval {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
