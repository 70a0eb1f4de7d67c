package import NIOCore

/// What a pub/sub component can do, as Dapr's components-contrib `pubsub.Feature` list (plus Hangar's durability).
package struct PubSubFeatures: OptionSet, Sendable, Hashable {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Per-message TTL honoured by the component (`PubSubMessage.ttl`): Dapr then adds no `expiration` to the
    /// envelope and leaves expiry to the component.
    package static let messageTTL = PubSubFeatures(rawValue: 1 << 0)
    /// Many messages in one call (`publish(_:to:on:)` with several), atomically.
    package static let bulkPublish = PubSubFeatures(rawValue: 1 << 1)
    /// An acknowledged publish survives a crash of the daemon (not a Dapr feature name; Hangar's own).
    package static let durable = PubSubFeatures(rawValue: 1 << 2)

    /// The names Dapr reports in `GetMetadata` for these features.
    package var daprNames: [String] {
        var names: [String] = []
        if contains(.messageTTL) { names.append("MESSAGE_TTL") }
        if contains(.bulkPublish) { names.append("BULK_PUBLISH") }
        return names
    }
}

/// Errors a pub/sub component reports. The runtime maps them to Dapr's error codes.
package enum PubSubError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Publishing would take the component above its `maxRetainedBytes`: `usage` is what it would hold.
    case full(usage: Int, limit: Int)
    /// Publishing would take the topic's partition (`PubSubPartition`) above the publish's `partitionLimit` (the
    /// runtime's per-tenant `maxPubsubBytes`): `usage` is what the partition would hold. Nothing was stored.
    case partitionFull(partition: String, usage: Int, limit: Int)
    /// The publish alone (`bytes`) is larger than the component's `setting` (`maxTopicBytes`, `maxRetainedBytes`)
    /// allows: it could never be stored, whatever is removed, so it is refused before anything else is done.
    case tooLarge(bytes: Int, limit: Int, setting: String)
    /// `fetch`, `ack` or `nack` for a consumer that `ensureConsumer` never created (or that was removed).
    case unknownConsumer(PubSubConsumer)
    /// An argument the component cannot use (an empty topic, a non-positive fetch limit).
    case invalidArgument(String)
    /// The backend failed.
    case backend(String)
    /// The backend cannot be reached now (a network backend's server is down or does not answer in time): the
    /// call failed fast and may be retried once it is back.
    case unavailable(String)
    /// The component has been closed.
    case closed

    package var description: String {
        switch self {
        case .full(let usage, let limit):
            "the pub/sub component is full: \(usage) bytes would exceed its maxRetainedBytes of \(limit)"
        case .partitionFull(let partition, let usage, let limit):
            "partition '\(partition)' is full: \(usage) bytes would exceed its limit of \(limit)"
        case .tooLarge(let bytes, let limit, let setting):
            "the publish is \(bytes) bytes, more than the component's \(setting) of \(limit): it can never be stored"
        case .unknownConsumer(let consumer): "no consumer \(consumer): it must be created first"
        case .invalidArgument(let message): message
        case .backend(let message): message
        case .unavailable(let message): message
        case .closed: "the pub/sub component is closed"
        }
    }

    /// Any error as a pub/sub error (a foreign one as `.backend` with its description).
    package static func from(_ error: any Error) -> PubSubError {
        error as? PubSubError ?? .backend("\(error)")
    }
}

/// How pub/sub components group topics for byte accounting: a topic's partition is the part of its name before the
/// first `||` (the whole name when it has none), as `StatePartition` groups state keys. The runtime names every
/// tenant's topics `<namespace>||<topic>`, so a partition is a tenant; components know nothing of that.
package enum PubSubPartition {
    /// The partition of a physical topic.
    package static func of(_ topic: String) -> String { StatePartition.of(topic) }
}

/// A pub/sub component as a node broker serving many tenants: an append-only log per topic, and per consumer
/// (group, topic) a cursor and a set of pending messages, leased and then acknowledged.
///
/// Names are physical and opaque: the runtime prefixes topics with the tenant and passes the subscribing app's
/// identity as the group, so components know nothing of tenants.
///
/// Semantics (every component passes the conformance suite that checks them):
/// - **At-least-once.** A fetched message stays pending for its consumer until acked by the id of its latest
///   delivery. An unacked message is delivered again once its lease ends (visibility timeout); a nacked one once
///   its `retryAfter` has passed. Each delivery's `attempt` is one more than the last.
/// - **Competing consumers, fan-out.** Callers fetching for the same consumer share its messages: a message
///   leased to one is not handed to another before the lease ends. Each group has its own cursor: every group
///   gets every message published after the group was created.
/// - **Order.** Within a topic, sequences increase in publish order and each fetch returns its deliveries in
///   sequence order; a redelivered message comes back before newer ones.
/// - **Groups start at the end.** A consumer created by `ensureConsumer` receives what is published after it;
///   later `ensureConsumer` calls never move its cursor back.
/// - **TTL.** A message whose TTL has passed is never delivered (and is removed by `trim`).
/// - **Retention.** `trim` removes a message once every consumer of its topic has acknowledged it (and any message
///   of a topic that has no consumer: none could ever receive it). Retention *forces* removal regardless of
///   consumers: a message older than the retention period, or the oldest ones of a topic above its byte limit,
///   are removed even when some consumer has not acknowledged them yet (a consumer that lags behind retention
///   loses those messages; its pending entries for them are dropped). Retention protects the node's disk and
///   memory from a subscriber that never acks, which is the limit that must hold.
/// - **Durability.** A component with `.durable` has committed a publish (and every lease, ack and cursor move)
///   to stable storage before its result completes.
///
/// Operations answer `Eventual`: components that never block (`pubsub.in-memory`) answer at once; others
/// complete on the caller's event loop once their backend has.
package protocol PubSub: AnyObject, Sendable {
    var features: PubSubFeatures { get }

    /// How long a message `fetch` leases stays leased when the fetch names no lease (the component's `ackTimeout`):
    /// after it, an unanswered delivery is the component's to hand out again.
    var ackTimeout: Duration { get }

    /// True when every operation completes before returning (no blocking work, no other thread).
    var executesInline: Bool { get }

    /// The bytes (`PubSubMessage.byteCount`) each topic retains now, as last committed; topics holding nothing are
    /// left out. A copy of a table with one entry per topic: for tests and reports, never for a hot path (use
    /// `usageByPartition` or `retainedBytes(inPartition:)`). It counts messages until they are removed (see
    /// `trim`), acknowledged or not.
    var usageByTopic: [String: Int] { get }

    /// `usageByTopic` summed by partition (`PubSubPartition`), kept as the topics change rather than summed when
    /// asked: one entry per partition (per tenant), for metrics. Partitions holding nothing are left out.
    var usageByPartition: [String: Int] { get }

    /// The bytes one partition retains now, as last committed: a lookup under a lock, cheap enough for every
    /// publish.
    func retainedBytes(inPartition partition: String) -> Int

    /// The sequence of the last message committed to `topic`, 0 when none ever was. Synchronous and cheap; read
    /// it before a `fetch` and pass it to `waitForPublish` so that no publish in between is missed.
    func lastSequence(of topic: String) -> UInt64

    /// Appends `messages` to `topic` in order, all or none, and returns their sequences. On a durable component
    /// the messages are on stable storage when the result completes. Refused, with nothing stored: with `.tooLarge`
    /// when the messages alone exceed `maxTopicBytes` or `maxRetainedBytes`; with `.partitionFull` when the
    /// topic's partition would hold more than `partitionLimit` (nil: no limit); with `.full` when the component
    /// would hold more than its `maxRetainedBytes`. The limits are checked against what is committed and what
    /// publishes ahead of this one in the component's order took, so concurrent publishes cannot overshoot them.
    /// Before refusing with `.full` or `.partitionFull`, the component may run `trim` to make room, but only when
    /// that can help (see `PubSubTrimGate`).
    func publish(
        _ messages: [PubSubMessage], to topic: String, partitionLimit: Int?, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]>

    /// Creates the consumer if it does not exist, with its cursor at the end of the topic's log; an existing one is
    /// left as it is. Returns the cursor: the consumer receives the messages after that sequence.
    func ensureConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<UInt64>

    /// Deletes the consumer, its cursor and its pending messages (which no longer hold back trimming). Removing a
    /// consumer that does not exist succeeds.
    func removeConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<Void>

    /// Leases up to `limit` deliverable messages of the consumer: first pending ones whose lease or retry delay
    /// has passed, then new ones past its cursor (which moves past them). Each stays pending, invisible to other
    /// fetches, until `lease` (nil: the component's `ackTimeout`) has passed. Expired messages are skipped.
    func fetch(
        _ consumer: PubSubConsumer, limit: Int, lease: Duration?, on eventLoop: any EventLoop
    ) -> Eventual<PubSubFetchResult>

    /// Settles deliveries: each message is no longer pending for the consumer. Ids of deliveries that are no
    /// longer current (leased again since, already acked, trimmed) are ignored. Returns how many took effect.
    func ack(_ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], on eventLoop: any EventLoop) -> Eventual<Int>

    /// Gives deliveries back: each message becomes deliverable again to the consumer after `retryAfter` (zero: at
    /// once), its next delivery counting one more attempt. Stale ids are ignored. Returns how many took effect.
    func nack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], retryAfter: Duration, on eventLoop: any EventLoop
    ) -> Eventual<Int>

    /// Runs retention now (it also runs periodically on components that have a cleanup interval): removes expired
    /// messages, those every consumer has acknowledged, and those retention forces out. Returns how many.
    func trim(on eventLoop: any EventLoop) -> EventLoopFuture<Int>

    /// Calls `handler` with the topic's last sequence after each commit that appended to `topic` (once per commit,
    /// not per message), until the observation is cancelled. The handler runs on the committing thread, after
    /// every lock is released: it must be quick and must not block (hop to an event loop to do work). When the
    /// component closes, each observer still registered is called once more with
    /// `PubSubTopicObservers.closedSequence` (`UInt64.max`), then dropped; an observation made after the close is
    /// called with it at once.
    func observe(topic: String, _ handler: @escaping @Sendable (UInt64) -> Void) -> PubSubObservation

    /// Releases files and connections. Later calls fail with `PubSubError.closed`; observers are dropped.
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void>
}

extension PubSub {
    /// Appends `messages` to `topic` with no partition limit.
    package func publish(
        _ messages: [PubSubMessage], to topic: String, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]> {
        publish(messages, to: topic, partitionLimit: nil, on: eventLoop)
    }

    /// Publishes one message and returns its sequence.
    package func publish(_ message: PubSubMessage, to topic: String, on eventLoop: any EventLoop) -> Eventual<UInt64> {
        publish([message], to: topic, on: eventLoop).flatMapThrowing { sequences in
            guard let sequence = sequences.first else { throw PubSubError.backend("no sequence for a publish") }
            return sequence
        }
    }

    /// Completes with true once `topic` holds a message beyond `sequence` (at once if it already does) or the
    /// component closes (its next operation then fails with `.closed`), or with false when `timeout` passes first
    /// (nil: no timeout). Read `sequence` from `lastSequence(of:)` before the `fetch` that came back empty, so that a
    /// publish between the two is not missed. The observation is always cancelled when the future completes: a
    /// waiter leaves nothing behind.
    package func waitForPublish(
        to topic: String, beyond sequence: UInt64, timeout: Duration?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Bool> {
        let promise = eventLoop.makePromise(of: Bool.self)
        waitForPublish(to: topic, beyond: sequence, timeout: timeout, completing: promise)
        return promise.futureResult
    }

    /// `waitForPublish` completing `promise`, which the caller may also complete itself (with false) to end the
    /// wait early: the observation and the timer are released whichever completes it first.
    package func waitForPublish(
        to topic: String, beyond sequence: UInt64, timeout: Duration?, completing promise: EventLoopPromise<Bool>
    ) {
        if lastSequence(of: topic) > sequence { return promise.succeed(true) }
        // Whichever comes first completes the promise; NIO ignores a later completion.
        let observation = observe(topic: topic) { last in
            if last > sequence { promise.succeed(true) }
        }
        let timer = timeout.map { timeout in
            promise.futureResult.eventLoop.scheduleTask(in: TimeAmount(timeout)) { promise.succeed(false) }
        }
        promise.futureResult.whenComplete { _ in
            observation.cancel()
            timer?.cancel()
        }
        // A publish that committed between the first check and the observation.
        if lastSequence(of: topic) > sequence { promise.succeed(true) }
    }
}
