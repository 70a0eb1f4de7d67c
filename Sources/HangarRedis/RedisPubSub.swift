import Foundation
package import HangarComponents
package import NIOCore
import HangarSync

/// `pubsub.redis`: Hangar's broker model on Redis Streams, in Dapr's layout, so that Dapr apps and Hangar apps
/// share the same streams (`dapr/components-contrib` `pubsub/redis`).
///
/// - **Publish** is `XADD <topic> [MAXLEN ~ maxLenApprox | MINID ~ now-streamTTL] * data <bytes> [metadata <json>]`
///   plus Hangar's `contentType` (and `expiresAt` for a TTL) fields (`RedisStreamEntry`); a bulk publish is one
///   script doing every `XADD` (atomic). Sequences are stream ids packed into 64 bits (`RedisStreamID`).
/// - **A consumer group per subscribing app** (the group name the runtime passes): `XGROUP CREATE <topic> <group>
///   $ MKSTREAM`, so a group starts at the end. Every node reads as the consumer named like the group (Dapr's
///   choice: all replicas of an app are one consumer).
/// - **One blocking read per group on the node** (`RedisGroupReader`): `XREADGROUP GROUP g g COUNT queueDepth
///   BLOCK ... STREAMS t1 t2 ... > > ...` on a connection of its own, covering every topic the group consumes
///   here. What it reads waits in the consumer's buffer (at most `queueDepth` per topic) for `fetch`, and wakes
///   the topic's observers. A fetch that wants more than is buffered asks the reader for a read now (the blocked
///   command is ended with `CLIENT UNBLOCK`), so that one connection reads a group's new entries and they are
///   handed out in stream order. Everything else (`XADD`, `XACK`, `XCLAIM`, `XPENDING`) goes over the shared
///   `RedisClient`.
/// - **Leases** are this node's: a fetched entry stays pending in the group (Redis's PEL) and is leased here until
///   acked (`XACK`), nacked (kept pending, deliverable again here after its delay) or its lease ends; it is then
///   redelivered with `XCLAIM` (which counts the delivery). Entries left pending by a node that died are
///   redelivered as Dapr does: every `redeliverInterval`, `XPENDING` lists the group's entries idle for
///   `processingTimeout` and `XCLAIM` takes them. Entries leased here for longer than half of `processingTimeout`
///   are claimed again without counting (`XCLAIM ... JUSTID`), so that other nodes do not take them meanwhile.
///
/// - **Bytes** are counted in Redis, in the scripts that change the streams (`RedisPubSub+Accounting.swift`): a
///   publish is refused, storing nothing, when it would take the topic's partition (the tenant) above the
///   runtime's `maxPubsubBytes` or the server's topics above `maxRetainedBytes`, whichever node publishes.
///   Dapr's retention (`maxLenApprox`, `streamTTL`) is run by the publish's script, exactly, so that what it
///   removes is subtracted; `trim` (every `cleanupInterval`) removes what every group acknowledged likewise.
package final class RedisPubSub: PubSub, BackendHealthReporting {
    /// The pub/sub settings of Dapr's `pubsub.redis` (the connection's are `RedisMetadata`).
    package struct Settings: Sendable, Hashable {
        /// How long an entry must be pending before another node may claim it; also the default lease. 0 turns
        /// redelivery of other nodes' entries off (as Dapr).
        package var processingTimeout: Duration = .seconds(60)
        /// How often the group's pending entries are checked (Dapr's default 15 s). 0: never.
        package var redeliverInterval: Duration = .seconds(15)
        /// The most entries one read takes per topic, and the most each consumer buffers.
        package var queueDepth = 100
        /// At most this many entries per stream, the oldest removed by each publish (Dapr's `MAXLEN ~`; exactly,
        /// and at most `removalBatch` per publish, so that what goes is counted); nil: none.
        package var maxLenApprox: Int?
        /// Entries older than this are removed by each publish (Dapr's `MINID ~ <now - streamTTL>`; exactly, at most
        /// `removalBatch` per publish); nil: none.
        package var streamTTL: Duration?
        /// `maxRetainedBytes`: the most bytes every stream of the server together holds (counted as the embedded
        /// components count them); a publish that would exceed it is refused with `PubSubError.full`. Nil: none.
        package var maxRetainedBytes: Int?
        /// How often `trim` runs by itself (removing what every group acknowledged); nil: never.
        package var cleanupInterval: Duration? = .seconds(10)
        /// How often the byte counters are read into the cache (they change with other nodes' publishes).
        package var usageRefreshInterval: Duration = .seconds(5)
        /// How often a publish refused for room may trim when nothing was acknowledged here since (`PubSubTrimGate`).
        package var fullTrimInterval: Duration = .seconds(1)
        /// How long a blocking read waits before it is issued again.
        package var blockTimeout: Duration = .seconds(10)
        /// The deadline of each command on the shared connections.
        package var commandTimeout: TimeAmount = .seconds(1)

        package init() {}
    }

    /// A message leased here: its delivery number, when it becomes deliverable again, when it was last claimed.
    struct Lease {
        var attempt: Int
        var visibleAt: NIODeadline
        var touchedAt: NIODeadline
    }

    /// An entry read for a consumer and not handed out yet.
    struct Ready {
        var entry: RedisStreamEntry
        var attempt: Int
        var readAt: NIODeadline
    }

    struct Consumer {
        var leases: [UInt64: Lease] = [:]
        /// New entries the group's reader read, in stream order.
        var buffered: [Ready] = []
        /// Entries claimed from the group's pending list (another consumer's, idle for `processingTimeout`).
        var reclaimed: [Ready] = []

        func isLocal(_ sequence: UInt64) -> Bool {
            leases[sequence] != nil || buffered.contains { $0.entry.sequence == sequence }
                || reclaimed.contains { $0.entry.sequence == sequence }
        }
    }

    struct State {
        var closed = false
        var lastSequence: [String: UInt64] = [:]
        var consumers: [PubSubConsumer: Consumer] = [:]
        var readers: [String: RedisGroupReader] = [:]
        var topics: Set<String> = []
        /// Why Redis cannot be reached now; nil while it answers.
        var problem: String?
        var lastCheck: NIODeadline?
        /// The byte counters as last read or returned by a script.
        var usage = RedisPubSubUsage()
        /// Per partition (nil: the whole component, for `maxRetainedBytes`), when a refused publish may trim.
        var gates: [String?: PubSubTrimGate] = [:]
        /// The periodic trim and usage refresh.
        var tasks: [RepeatedTask] = []
    }

    package let settings: Settings
    package let client: RedisClient
    /// The configuration of the groups' blocking connections (named so in `CLIENT LIST`).
    let readerConfiguration: RedisConfiguration
    let eventLoopGroup: any EventLoopGroup
    let observers = PubSubTopicObservers()
    let state = Locked(State())

    /// The name blocking connections give themselves (`CLIENT SETNAME`).
    package static let readerClientName = "hangard-xreadgroup"

    package init(
        configuration: RedisConfiguration, options: RedisClient.Options = .init(), settings: Settings = .init(),
        eventLoopGroup: any EventLoopGroup
    ) {
        self.settings = settings
        client = RedisClient(configuration, options: options, group: eventLoopGroup)
        var readerConfiguration = configuration
        readerConfiguration.clientName = Self.readerClientName
        self.readerConfiguration = readerConfiguration
        self.eventLoopGroup = eventLoopGroup
        let eventLoop = eventLoopGroup.next()
        var tasks: [RepeatedTask] = []
        // Weakly held: the tasks end with `close`, but a component dropped without it must not live on.
        tasks.append(
            eventLoop.scheduleRepeatedAsyncTask(
                initialDelay: .zero, delay: TimeAmount(settings.usageRefreshInterval)
            ) { [weak self] task in
                guard let self else {
                    task.cancel()
                    return eventLoop.makeSucceededVoidFuture()
                }
                return self.refreshUsage().recover { _ in }
            })
        if let interval = settings.cleanupInterval {
            tasks.append(
                eventLoop.scheduleRepeatedAsyncTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) {
                    [weak self] task in
                    guard let self else {
                        task.cancel()
                        return eventLoop.makeSucceededVoidFuture()
                    }
                    let topics = self.state.withLock { $0.topics.sorted() }
                    return self.trim(topics, on: eventLoop).map { _ in }.recover { _ in }
                })
        }
        state.withLock { $0.tasks = tasks }
    }

    package var features: PubSubFeatures { [.messageTTL, .bulkPublish] }
    package var ackTimeout: Duration { settings.processingTimeout > .zero ? settings.processingTimeout : .seconds(60) }
    package var executesInline: Bool { false }

    /// Served from the cache of the counters kept in Redis (`RedisPubSubUsage`): as this node's last scripts left
    /// them, and every `usageRefreshInterval` as Redis has them (other nodes' publishes).
    package var usageByTopic: [String: Int] { state.withLock { $0.usage.byTopic } }
    package var usageByPartition: [String: Int] { state.withLock { $0.usage.byPartition } }
    package func retainedBytes(inPartition partition: String) -> Int {
        state.withLock { max(0, $0.usage.partitions[partition]?.bytes ?? 0) }
    }

    package func lastSequence(of topic: String) -> UInt64 { state.withLock { $0.lastSequence[topic] ?? 0 } }

    package var backendProblem: String? {
        let (problem, check) = state.withLock { state -> (String?, Bool) in
            guard let problem = state.problem, !state.closed else { return (nil, false) }
            let now = NIODeadline.now()
            let due = state.lastCheck.map { now - $0 > .seconds(1) } ?? true
            if due { state.lastCheck = now }
            return (problem, due)
        }
        // Nobody may be calling: a PING now and then tells when the server is back.
        if check { _ = command(["PING"]) }
        return problem
    }

    /// Messages for the open connections (never credentials).
    var address: String { "\(client.configuration.address)" }

    // MARK: Commands

    /// Sends a command on the shared connections, noting whether Redis answers; commands with the same
    /// `orderedBy` run in the order they were sent (a topic's publishes).
    func command(_ arguments: [RESPArgument], orderedBy key: String? = nil) -> EventLoopFuture<RESPValue> {
        let future = client.send(arguments, deadline: .now() + settings.commandTimeout, orderedBy: key)
        future.whenComplete { result in self.noteOutcome(result.map { _ in () }) }
        return future.flatMapErrorThrowing { throw self.pubsubError($0) }
    }

    /// Records whether a call reached Redis (for `backendProblem`).
    func noteOutcome(_ result: Result<Void, any Error>) {
        switch result {
        case .success:
            state.withLock { $0.problem = nil }
        case .failure(let error):
            if case .unavailable(let message) = pubsubError(error) { state.withLock { $0.problem = message } }
        }
    }

    /// A Redis failure as a pub/sub error: unreachable (connection, deadline, handshake) or refused.
    func pubsubError(_ error: any Error) -> PubSubError {
        switch error {
        case let error as PubSubError: error
        case RedisError.server(let message): .backend("pubsub.redis: Redis refused the command: \(message)")
        case let error as RedisError: .unavailable("pubsub.redis: Redis at \(address) cannot be reached: \(error)")
        default: .backend("pubsub.redis: \(error)")
        }
    }

    static func isNoGroup(_ error: any Error) -> Bool {
        if case .backend(let message) = error as? PubSubError { return message.contains("NOGROUP") }
        if case RedisError.server(let message) = error { return message.hasPrefix("NOGROUP") }
        return false
    }

    private func refusal<T>(_ consumer: PubSubConsumer?) -> Eventual<T>? {
        state.withLock { state -> Eventual<T>? in
            if state.closed { return .failure(PubSubError.closed) }
            if let consumer, state.consumers[consumer] == nil { return .failure(PubSubError.unknownConsumer(consumer)) }
            return nil
        }
    }

    // MARK: Publish

    /// Dapr's retention as the publish script's arguments (`''`, `maxlen <n>` or `minid <id>`): entries below
    /// `<now - streamTTL>-1` go, as Dapr's `MINID ~` names them.
    func retention(now: Date) -> [RESPArgument] {
        if let maxLen = settings.maxLenApprox { return ["maxlen", .integer(Int64(maxLen))] }
        if let ttl = settings.streamTTL {
            let ms = Int64((now.timeIntervalSince1970 * 1000).rounded(.down)) - Self.milliseconds(ttl)
            return ["minid", .string("\(max(0, ms))-1")]
        }
        return ["", ""]
    }

    package func publish(
        _ messages: [PubSubMessage], to topic: String, partitionLimit: Int?, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]> {
        guard !topic.isEmpty else { return .failure(PubSubError.invalidArgument("the topic is empty")) }
        if let refused: Eventual<[UInt64]> = refusal(nil) { return refused }
        guard !messages.isEmpty else { return .success([]) }
        let bytes = messages.reduce(0) { $0 + $1.byteCount }
        if let limit = settings.maxRetainedBytes, bytes > limit {
            return .failure(PubSubError.tooLarge(bytes: bytes, limit: limit, setting: "maxRetainedBytes"))
        }
        let now = Date()
        let partition = PubSubPartition.of(topic)
        let limits: [RESPArgument] = [
            .string(topic), .string(partition), .integer(Int64(bytes)), .integer(Int64(partitionLimit ?? -1)),
            .integer(Int64(settings.maxRetainedBytes ?? -1)),
        ]
        let arguments =
            limits + retention(now: now) + [.integer(Int64(Self.removalBatch))]
            + messages.flatMap { message in
                let fields = RedisStreamEntry.fields(of: message, now: now)
                return [.integer(Int64(fields.count))] + fields
            }
        let keys = RedisPubSubKeys.keys(topic: topic)
        @Sendable func attempt(trimmed: Bool) -> EventLoopFuture<[UInt64]> {
            evaluate(Self.publishScript, keys: keys, arguments: arguments, orderedBy: topic).flatMapThrowing {
                reply in
                guard let parts = reply.elements, let ids = parts.first?.elements else {
                    throw PubSubError.backend("pubsub.redis: the publish script gave no ids")
                }
                let sequences = try ids.map { id in
                    guard let text = id.string, let sequence = RedisStreamID.sequence(text) else {
                        throw PubSubError.backend("pubsub.redis: XADD gave an id Hangar cannot read: \(id)")
                    }
                    return sequence
                }
                self.noteUsage(topic, parts, at: 1)
                self.advance(topic, to: sequences.max() ?? 0, notify: true)
                return sequences
            }.flatMapError { error in
                let refused: PubSubError
                let scope: String?
                if let partitionLimit, let usage = Self.refusedUsage(error, code: "HANGAR_PARTITION_FULL") {
                    refused = .partitionFull(partition: partition, usage: usage, limit: partitionLimit)
                    scope = partition
                } else if let limit = self.settings.maxRetainedBytes,
                    let usage = Self.refusedUsage(error, code: "HANGAR_FULL")
                {
                    refused = .full(usage: usage, limit: limit)
                    scope = nil
                } else {
                    return eventLoop.makeFailedFuture(self.pubsubError(error))
                }
                // Room is made by trimming only when that can help (an ack since the last trim, or time for TTLs).
                guard !trimmed, self.mayTrimForRoom(scope) else { return eventLoop.makeFailedFuture(refused) }
                return self.trim(self.topicsForRoom(scope), on: eventLoop).recover { _ in 0 }.flatMap { _ in
                    attempt(trimmed: true)
                }
            }
        }
        return .later(attempt(trimmed: false).hop(to: eventLoop))
    }

    /// Moves a topic's last sequence forward and tells its observers.
    func advance(_ topic: String, to sequence: UInt64, notify: Bool) {
        let last = state.withLock { state -> UInt64 in
            state.topics.insert(topic)
            let last = max(state.lastSequence[topic] ?? 0, sequence)
            state.lastSequence[topic] = last
            return last
        }
        if notify { observers.notify([(topic: topic, last: last)]) }
    }

    // MARK: Consumers

    /// Creates the group at the end of the stream (`$`), or at its start (`0`) when it is created again after it
    /// vanished (a server that restarted without its data: everything in the stream now is new to the group, as
    /// Dapr recreates it). `BUSYGROUP` (it exists) is success.
    func createGroup(_ group: String, topic: String, fromStart: Bool) -> EventLoopFuture<Void> {
        command(["XGROUP", "CREATE", .string(topic), .string(group), fromStart ? "0" : "$", "MKSTREAM"])
            .map { _ in }
            .flatMapError { error in
                if case .backend(let message) = error as? PubSubError, message.contains("BUSYGROUP") {
                    return self.eventLoopGroup.next().makeSucceededVoidFuture()
                }
                return self.eventLoopGroup.next().makeFailedFuture(error)
            }
    }

    package func ensureConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<UInt64> {
        guard !consumer.topic.isEmpty else { return .failure(PubSubError.invalidArgument("the topic is empty")) }
        if let refused: Eventual<UInt64> = refusal(nil) { return refused }
        let future = createGroup(consumer.group, topic: consumer.topic, fromStart: false).flatMap {
            self.command(["XINFO", "GROUPS", .string(consumer.topic)])
        }.flatMapThrowing { reply -> UInt64 in
            var delivered: UInt64 = 0
            for group in reply.elements ?? [] {
                let fields = group.elements ?? []
                var values: [String: RESPValue] = [:]
                var index = 0
                while index + 1 < fields.count {
                    if let name = fields[index].string { values[name] = fields[index + 1] }
                    index += 2
                }
                if values["name"]?.string == consumer.group {
                    delivered = values["last-delivered-id"]?.string.flatMap(RedisStreamID.sequence) ?? 0
                }
            }
            let (reader, cursor) = try self.state.withLock { state -> (RedisGroupReader, UInt64) in
                if state.closed { throw PubSubError.closed }
                state.topics.insert(consumer.topic)
                let entry = state.consumers[consumer, default: Consumer()]
                state.consumers[consumer] = entry
                let reader =
                    state.readers[consumer.group]
                    ?? RedisGroupReader(group: consumer.group, owner: self, on: self.eventLoopGroup.next())
                state.readers[consumer.group] = reader
                // What the reader took and nobody fetched yet is still ahead of the consumer.
                let firstBuffered = entry.buffered.first.map { $0.entry.sequence - 1 } ?? .max
                return (reader, min(delivered, firstBuffered))
            }
            reader.add(consumer.topic)
            return cursor
        }
        return .later(future.hop(to: eventLoop))
    }

    package func removeConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<Void> {
        if let refused: Eventual<Void> = refusal(nil) { return refused }
        let reader = state.withLock { state -> RedisGroupReader? in
            state.consumers[consumer] = nil
            let reader = state.readers[consumer.group]
            if state.consumers.keys.allSatisfy({ $0.group != consumer.group }) { state.readers[consumer.group] = nil }
            return reader
        }
        if let reader {
            reader.remove(consumer.topic)
            if reader.topicCount == 0 { _ = reader.close() }
        }
        settled(PubSubPartition.of(consumer.topic))
        let future = command(["XGROUP", "DESTROY", .string(consumer.topic), .string(consumer.group)]).map { _ in }
            .flatMapError { error -> EventLoopFuture<Void> in
                // The stream is gone: so is the group.
                if case .backend(let message) = error as? PubSubError, message.contains("requires the key to exist") {
                    return eventLoop.makeSucceededVoidFuture()
                }
                return eventLoop.makeFailedFuture(error)
            }
        return .later(future.hop(to: eventLoop))
    }

    // MARK: Fetch

    package func fetch(
        _ consumer: PubSubConsumer, limit: Int, lease: Duration?, on eventLoop: any EventLoop
    ) -> Eventual<PubSubFetchResult> {
        if let refused: Eventual<PubSubFetchResult> = refusal(consumer) { return refused }
        guard limit > 0 else {
            return .failure(PubSubError.invalidArgument("the fetch limit must be positive, not \(limit)"))
        }
        let leaseTime = TimeAmount(lease ?? ackTimeout)
        // Leases that ended (or nacks whose delay passed) first: marked as leased again at once, so that a
        // concurrent fetch does not take them too.
        let due = state.withLock { state -> [(sequence: UInt64, attempt: Int)] in
            guard var entry = state.consumers[consumer] else { return [] }
            let now = NIODeadline.now()
            let due = entry.leases.filter { $0.value.visibleAt <= now }.keys.sorted().prefix(limit)
            var marked: [(UInt64, Int)] = []
            for sequence in due {
                entry.leases[sequence]!.attempt += 1
                entry.leases[sequence]!.visibleAt = now + leaseTime
                entry.leases[sequence]!.touchedAt = now
                marked.append((sequence, entry.leases[sequence]!.attempt))
            }
            state.consumers[consumer] = entry
            return marked
        }
        let future = redeliver(due, consumer: consumer, leaseTime: leaseTime).flatMap { redelivered in
            self.takeReady(consumer, limit: limit - redelivered.count, leaseTime: leaseTime).map { redelivered + $0 }
        }.map { deliveries in
            PubSubFetchResult(
                deliveries: deliveries,
                nextRedeliveryAt: deliveries.count < limit ? self.nextVisible(consumer) : nil)
        }
        return .later(future.hop(to: eventLoop))
    }

    /// When the consumer's first leased message becomes deliverable again.
    private func nextVisible(_ consumer: PubSubConsumer) -> Date? {
        state.withLock { state in
            guard let next = state.consumers[consumer]?.leases.values.map(\.visibleAt).min() else { return nil }
            return Date(timeIntervalSinceNow: Double((next - .now()).nanoseconds) / 1e9)
        }
    }

    /// Claims due leased entries again (`XCLAIM`, which counts a delivery) and returns them; entries gone from the
    /// stream (trimmed) are forgotten, expired ones acknowledged and dropped.
    private func redeliver(
        _ due: [(sequence: UInt64, attempt: Int)], consumer: PubSubConsumer, leaseTime: TimeAmount
    ) -> EventLoopFuture<[PubSubDelivery]> {
        guard !due.isEmpty else { return eventLoopGroup.next().makeSucceededFuture([]) }
        let arguments: [RESPArgument] =
            ["XCLAIM", .string(consumer.topic), .string(consumer.group), .string(consumer.group), "0"]
            + due.map { .string(RedisStreamID.id($0.sequence)) }
        return command(arguments).map { reply in
            let entries = Dictionary(
                RedisStreamEntry.entries(reply).map { ($0.sequence, $0) }, uniquingKeysWith: { first, _ in first })
            let now = Date()
            var expired: [UInt64] = []
            let deliveries = self.state.withLock { state -> [PubSubDelivery] in
                guard var entry = state.consumers[consumer] else { return [] }
                var deliveries: [PubSubDelivery] = []
                for (sequence, attempt) in due where entry.leases[sequence]?.attempt == attempt {
                    guard let found = entries[sequence] else {
                        entry.leases[sequence] = nil
                        continue
                    }
                    if let expiresAt = found.expiresAt, expiresAt <= now {
                        entry.leases[sequence] = nil
                        expired.append(sequence)
                        continue
                    }
                    deliveries.append(Self.delivery(found, attempt: attempt))
                }
                state.consumers[consumer] = entry
                return deliveries
            }
            self.acknowledge(expired, consumer: consumer)
            return deliveries
        }.flatMapError { error in
            // Not claimed: visible again at once, at the attempt they had.
            self.state.withLock { state in
                guard var entry = state.consumers[consumer] else { return }
                for (sequence, attempt) in due where entry.leases[sequence]?.attempt == attempt {
                    entry.leases[sequence]!.attempt -= 1
                    entry.leases[sequence]!.visibleAt = .now()
                }
                state.consumers[consumer] = entry
            }
            if Self.isNoGroup(error) { return self.eventLoopGroup.next().makeSucceededFuture([]) }
            return self.eventLoopGroup.next().makeFailedFuture(error)
        }
    }

    static func delivery(_ entry: RedisStreamEntry, attempt: Int) -> PubSubDelivery {
        PubSubDelivery(
            sequence: entry.sequence, attempt: attempt, message: entry.message, publishedAt: entry.publishedAt,
            expiresAt: entry.expiresAt)
    }

    /// Hands out reclaimed then buffered entries; when fewer than `limit`, has the group's reader read now and
    /// hands out what it read.
    private func takeReady(
        _ consumer: PubSubConsumer, limit: Int, leaseTime: TimeAmount
    ) -> EventLoopFuture<[PubSubDelivery]> {
        guard limit > 0 else { return eventLoopGroup.next().makeSucceededFuture([]) }
        let (first, reader) = take(consumer, limit: limit, leaseTime: leaseTime)
        guard first.count < limit, let reader else { return eventLoopGroup.next().makeSucceededFuture(first) }
        return reader.readNow(consumer.topic, count: limit - first.count).map {
            first + self.take(consumer, limit: limit - first.count, leaseTime: leaseTime).deliveries
        }.flatMapError { error in
            // What was leased already goes out; the error only when there is nothing.
            first.isEmpty
                ? self.eventLoopGroup.next().makeFailedFuture(error)
                : self.eventLoopGroup.next().makeSucceededFuture(first)
        }
    }

    private func take(
        _ consumer: PubSubConsumer, limit: Int, leaseTime: TimeAmount
    ) -> (deliveries: [PubSubDelivery], reader: RedisGroupReader?) {
        var expired: [UInt64] = []
        let (deliveries, reader, drained) = state.withLock {
            state -> ([PubSubDelivery], RedisGroupReader?, Bool) in
            guard var entry = state.consumers[consumer] else { return ([], nil, false) }
            let now = NIODeadline.now()
            let date = Date()
            let wasFull = entry.buffered.count >= settings.queueDepth
            var deliveries: [PubSubDelivery] = []
            func hand(_ ready: Ready) {
                if let expiresAt = ready.entry.expiresAt, expiresAt <= date {
                    expired.append(ready.entry.sequence)
                    return
                }
                entry.leases[ready.entry.sequence] = Lease(
                    attempt: ready.attempt, visibleAt: now + leaseTime, touchedAt: now)
                deliveries.append(Self.delivery(ready.entry, attempt: ready.attempt))
            }
            while deliveries.count < limit, !entry.reclaimed.isEmpty { hand(entry.reclaimed.removeFirst()) }
            // Read long ago and never fetched: another node may have claimed them since; they are left to the
            // reclaiming of the group's idle entries.
            let stale = settings.processingTimeout > .zero ? now - TimeAmount(settings.processingTimeout) : nil
            var taken = 0
            while deliveries.count < limit, taken < entry.buffered.count {
                let ready = entry.buffered[taken]
                taken += 1
                if let stale, ready.readAt < stale { continue }
                hand(ready)
            }
            entry.buffered.removeFirst(taken)
            state.consumers[consumer] = entry
            return (deliveries, state.readers[consumer.group], wasFull && entry.buffered.count < settings.queueDepth)
        }
        acknowledge(expired, consumer: consumer)
        // A topic left out of the blocking read because its buffer was full has room again.
        if drained { reader?.topicsChanged() }
        return (deliveries.sorted { $0.sequence < $1.sequence }, reader)
    }

    /// `XACK`s entries without waiting (expired ones).
    private func acknowledge(_ sequences: [UInt64], consumer: PubSubConsumer) {
        guard !sequences.isEmpty else { return }
        _ = command(
            ["XACK", .string(consumer.topic), .string(consumer.group)]
                + sequences.map { .string(RedisStreamID.id($0)) })
    }

    /// Buffers what a group's reader read (attempt 1), moves the topics' last sequences and wakes their observers.
    func received(group: String, _ streams: [String: [RedisStreamEntry]]) {
        guard !streams.isEmpty else { return }
        let now = NIODeadline.now()
        let lasts = state.withLock { state -> [(topic: String, last: UInt64)] in
            var lasts: [(topic: String, last: UInt64)] = []
            for (topic, entries) in streams where !entries.isEmpty {
                let consumer = PubSubConsumer(group: group, topic: topic)
                // A consumer removed meanwhile: the entries stay pending in the group, for reclaiming.
                state.consumers[consumer]?.buffered += entries.map { Ready(entry: $0, attempt: 1, readAt: now) }
                let last = max(state.lastSequence[topic] ?? 0, entries.map(\.sequence).max() ?? 0)
                state.lastSequence[topic] = last
                lasts.append((topic, last))
            }
            return lasts
        }
        observers.notify(lasts)
    }

    /// The topics of `group` whose consumers have room in their buffers, among `topics`.
    func topicsWithRoom(group: String, among topics: [String]) -> [String] {
        state.withLock { state in
            topics.filter { topic in
                guard let consumer = state.consumers[PubSubConsumer(group: group, topic: topic)] else { return false }
                return consumer.buffered.count < settings.queueDepth
            }
        }
    }

    // MARK: Settle

    package func ack(_ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], on eventLoop: any EventLoop) -> Eventual<
        Int
    > {
        if let refused: Eventual<Int> = refusal(consumer) { return refused }
        let matched = state.withLock { state -> [UInt64] in
            guard var entry = state.consumers[consumer] else { return [] }
            var matched: [UInt64] = []
            for id in ids where entry.leases[id.sequence]?.attempt == id.attempt {
                entry.leases[id.sequence] = nil
                matched.append(id.sequence)
            }
            state.consumers[consumer] = entry
            return matched
        }
        guard !matched.isEmpty else { return .success(0) }
        settled(PubSubPartition.of(consumer.topic))
        let future = command(
            ["XACK", .string(consumer.topic), .string(consumer.group)] + matched.map { .string(RedisStreamID.id($0)) }
        ).map { reply -> Int in
            if case .integer(let count) = reply { return Int(count) }
            return 0
        }.flatMapError { error in
            Self.isNoGroup(error) ? eventLoop.makeSucceededFuture(0) : eventLoop.makeFailedFuture(error)
        }
        return .later(future.hop(to: eventLoop))
    }

    package func nack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], retryAfter: Duration, on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        if let refused: Eventual<Int> = refusal(consumer) { return refused }
        // The entry stays pending in the group; this node delivers it again once the delay has passed (and keeps
        // claiming it meanwhile so that no other node takes it).
        let count = state.withLock { state -> Int in
            guard var entry = state.consumers[consumer] else { return 0 }
            let visibleAt = NIODeadline.now() + TimeAmount(max(.zero, retryAfter))
            var count = 0
            for id in ids where entry.leases[id.sequence]?.attempt == id.attempt {
                entry.leases[id.sequence]!.visibleAt = visibleAt
                count += 1
            }
            state.consumers[consumer] = entry
            return count
        }
        return .success(count)
    }

    // MARK: Redelivery of other consumers' entries

    /// For each topic of `group`: claims again, without counting, what is leased here for long (so that other
    /// nodes leave it alone), then claims the group's entries idle for `processingTimeout` that are not this
    /// node's (`XPENDING` + `XCLAIM`, as Dapr), buffers them for redelivery and wakes the topic's observers.
    func reclaim(group: String, topics: [String]) {
        let timeout = settings.processingTimeout
        guard timeout > .zero else { return }
        for topic in topics {
            let consumer = PubSubConsumer(group: group, topic: topic)
            let touch = state.withLock { state -> [UInt64] in
                guard var entry = state.consumers[consumer] else { return [] }
                let now = NIODeadline.now()
                let old = now - TimeAmount(timeout / 2)
                let touch = entry.leases.filter { $0.value.touchedAt < old }.keys.sorted()
                for sequence in touch { entry.leases[sequence]!.touchedAt = now }
                state.consumers[consumer] = entry
                return touch
            }
            if !touch.isEmpty {
                _ = command(
                    ["XCLAIM", .string(topic), .string(group), .string(group), "0"]
                        + touch.map { .string(RedisStreamID.id($0)) } + ["JUSTID"])
            }
            guard settings.redeliverInterval > .zero else { continue }
            let minimum = Self.milliseconds(timeout)
            command(["XPENDING", .string(topic), .string(group), "-", "+", .integer(Int64(settings.queueDepth))])
                .flatMap { reply -> EventLoopFuture<(RESPValue, [UInt64: Int])> in
                    var found: [UInt64: Int] = [:]
                    for item in reply.elements ?? [] {
                        guard let fields = item.elements, fields.count >= 4, let id = fields[0].string,
                            let sequence = RedisStreamID.sequence(id), case .integer(let idle) = fields[2],
                            case .integer(let deliveries) = fields[3], idle >= minimum
                        else { continue }
                        found[sequence] = Int(deliveries)
                    }
                    let counts = found
                    let foreign = self.state.withLock { state in
                        counts.keys.filter { state.consumers[consumer]?.isLocal($0) == false }.sorted()
                    }
                    guard !foreign.isEmpty else {
                        return self.eventLoopGroup.next().makeSucceededFuture((.null, [:]))
                    }
                    return self.command(
                        ["XCLAIM", .string(topic), .string(group), .string(group), .integer(minimum)]
                            + foreign.map { .string(RedisStreamID.id($0)) }
                    ).map { ($0, counts) }
                }.whenSuccess { reply, counts in
                    let claimed = RedisStreamEntry.entries(reply)
                    guard !claimed.isEmpty else { return }
                    let now = NIODeadline.now()
                    let wake = self.state.withLock { state -> UInt64? in
                        guard var entry = state.consumers[consumer] else { return nil }
                        for found in claimed where !entry.isLocal(found.sequence) {
                            entry.reclaimed.append(
                                Ready(entry: found, attempt: (counts[found.sequence] ?? 0) + 1, readAt: now))
                        }
                        entry.reclaimed.sort { $0.entry.sequence < $1.entry.sequence }
                        state.consumers[consumer] = entry
                        // Past the last sequence, so that a waiter that saw it wakes: the observers hear that
                        // messages became deliverable, which on Redis is not only a publish.
                        return (state.lastSequence[topic] ?? 0) &+ 1
                    }
                    if let wake { self.observers.notify([(topic: topic, last: wake)]) }
                }
        }
    }

    // MARK: Trim, observe, close

    /// Removes, from each stream this node knows, the entries every group has acknowledged (below the first entry
    /// some group has not: its first pending entry, or the first after its last delivered one), subtracting what
    /// they counted, in `trimScript` batches. A stream with no group is left alone (a Dapr app may create its group
    /// later from the start); expired entries go once every group has passed them (they are never delivered
    /// meanwhile; those this node read and has not handed out are acknowledged first). A stream found empty or gone
    /// has its counter zeroed.
    package func trim(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        trim(state.withLock { $0.topics.sorted() }, on: eventLoop)
    }

    /// `trim` of some topics.
    func trim(_ topics: [String], on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        if isClosed { return eventLoop.makeFailedFuture(PubSubError.closed) }
        return acknowledgeExpired(on: eventLoop).flatMap {
            let trims = topics.map { topic in
                self.cut(of: topic, on: eventLoop).flatMap { cut in
                    self.remove(from: topic, below: cut, removedBefore: 0, on: eventLoop)
                }
            }
            return EventLoopFuture.whenAllSucceed(trims, on: eventLoop).map { $0.reduce(0, +) }
        }
    }

    /// The first entry some group of `topic` still needs; nil when none may go (no group, or no stream).
    private func cut(of topic: String, on eventLoop: any EventLoop) -> EventLoopFuture<UInt64?> {
        command(["XINFO", "GROUPS", .string(topic)]).flatMap { reply -> EventLoopFuture<UInt64?> in
            let groups: [(name: String, delivered: UInt64)] = (reply.elements ?? []).compactMap { group in
                let fields = group.elements ?? []
                var values: [String: String] = [:]
                var index = 0
                while index + 1 < fields.count {
                    if let name = fields[index].string { values[name] = fields[index + 1].string }
                    index += 2
                }
                guard let name = values["name"] else { return nil }
                return (name, values["last-delivered-id"].flatMap(RedisStreamID.sequence) ?? 0)
            }
            guard !groups.isEmpty else { return eventLoop.makeSucceededFuture(nil) }
            let firsts = groups.map { group in
                self.command(["XPENDING", .string(topic), .string(group.name)]).map { summary -> UInt64 in
                    let pendingFirst = summary.elements.flatMap { $0.count > 1 ? $0[1].string : nil }
                        .flatMap(RedisStreamID.sequence)
                    return min(pendingFirst ?? .max, group.delivered &+ 1)
                }
            }
            return EventLoopFuture.whenAllSucceed(firsts, on: eventLoop).map { firsts in
                let cut = firsts.min() ?? 0
                return cut > 0 && cut != .max ? cut : nil
            }
        }.flatMapError { error in
            // A stream that does not exist (never created, or lost) has nothing to trim.
            if case .backend(let message) = error as? PubSubError, message.contains("no such key") {
                return eventLoop.makeSucceededFuture(nil)
            }
            return eventLoop.makeFailedFuture(error)
        }
    }

    /// Removes `topic`'s entries below `cut` (none when nil: the script still zeroes the counter of a stream that is
    /// empty or gone), a batch per script, until none is left; returns how many went.
    private func remove(
        from topic: String, below cut: UInt64?, removedBefore: Int, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Int> {
        let arguments: [RESPArgument] = [
            .string(topic), .string(PubSubPartition.of(topic)), .string(cut.map(RedisStreamID.id) ?? ""),
            .integer(Int64(Self.removalBatch)),
        ]
        return evaluate(Self.trimScript, keys: RedisPubSubKeys.keys(topic: topic), arguments: arguments)
            .flatMapErrorThrowing { throw self.pubsubError($0) }
            .flatMap { reply in
                let parts = reply.elements ?? []
                let removed = parts.first.flatMap(Self.integer).map(Int.init) ?? 0
                self.noteUsage(topic, parts, at: 1)
                guard parts.count > 5, Self.integer(parts[5]) == 1 else {
                    return eventLoop.makeSucceededFuture(removedBefore + removed)
                }
                return self.remove(from: topic, below: cut, removedBefore: removedBefore + removed, on: eventLoop)
            }
    }

    /// Acknowledges the entries this node read and has not handed out whose TTL has passed (they would never be
    /// delivered, and pending they hold back trimming); they leave the consumers' buffers.
    private func acknowledgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let now = Date()
        let expired = state.withLock { state -> [(PubSubConsumer, [UInt64])] in
            var expired: [(PubSubConsumer, [UInt64])] = []
            for (consumer, var entry) in state.consumers {
                func isExpired(_ ready: Ready) -> Bool { ready.entry.expiresAt.map { $0 <= now } ?? false }
                let sequences = (entry.buffered + entry.reclaimed).filter(isExpired).map(\.entry.sequence)
                guard !sequences.isEmpty else { continue }
                entry.buffered.removeAll(where: isExpired)
                entry.reclaimed.removeAll(where: isExpired)
                state.consumers[consumer] = entry
                expired.append((consumer, sequences))
            }
            return expired
        }
        let acks = expired.map { consumer, sequences in
            command(
                ["XACK", .string(consumer.topic), .string(consumer.group)]
                    + sequences.map { .string(RedisStreamID.id($0)) }
            ).map { _ in }.recover { _ in }
        }
        return EventLoopFuture.andAllComplete(acks, on: eventLoop)
    }

    package func observe(topic: String, _ handler: @escaping @Sendable (UInt64) -> Void) -> PubSubObservation {
        observers.observe(topic: topic, handler)
    }

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let readers = state.withLock { state -> [RedisGroupReader]? in
            guard !state.closed else { return nil }
            state.closed = true
            for task in state.tasks { task.cancel() }
            state.tasks = []
            defer { state.readers = [:] }
            return Array(state.readers.values)
        }
        guard let readers else { return eventLoop.makeSucceededVoidFuture() }
        observers.close()
        let closes = readers.map { $0.close() } + [client.close()]
        return EventLoopFuture.andAllComplete(closes, on: eventLoop)
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Whole milliseconds of a duration (Redis's unit for BLOCK, XCLAIM and MINID), saturating.
    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        if overflow { return seconds < 0 ? .min : .max }
        return product.addingReportingOverflow(attoseconds / 1_000_000_000_000_000).partialValue
    }

    /// How many observations are registered (for tests).
    package var observerCount: Int { observers.count }

    /// How many groups have a blocking reader here (for tests).
    package var readerCount: Int { state.withLock { $0.readers.count } }
}
