import Foundation
import HangarComponents

/// The one connection of a `pubsub.sqlite` database and what it knows of it: every topic's last sequence and bytes,
/// every consumer's id and cursor. Each operation runs inside the transaction of the batch it belongs to (see
/// `SQLitePubSub`); the caches change with it, and after a rollback they are read again from the database.
///
/// An operation throws a `PubSubError` only before it has written anything, or after writes that stand on their own
/// (a publish refused as full after trimming for room): the batch goes on. Any other error fails the whole batch,
/// whose operations then run again one by one (see `SQLitePubSub`). Not `Sendable`: the drain that owns it runs one batch at a time behind a mutex.
final class SQLitePubSubWriter {
    typealias Schema = SQLitePubSubSchema

    struct TopicRow {
        var id: Int64
        var last: UInt64
        var bytes: Int
    }

    struct ConsumerRow {
        var id: Int64
        var topicID: Int64
        var cursor: UInt64
    }

    let connection: SQLiteConnection
    let limits: PubSubLimits
    private(set) var topics: [String: TopicRow] = [:]
    private var topicNames: [Int64: String] = [:]
    private var consumers: [PubSubConsumer: ConsumerRow] = [:]
    private(set) var totalBytes = 0
    /// `bytes` summed by partition (`PubSubPartition`): what `partitionLimit` is checked against.
    private(set) var partitions: [String: Int] = [:]
    /// When a refused publish may trim to make room.
    private var gate: PubSubTrimGate
    /// How many trims for room ran (see `PubSubTrimGate`).
    var trimsForRoom: Int { gate.trimsForRoom }
    /// Topics whose row or bytes the current batch changed: their stats are published after COMMIT.
    private(set) var touched: Set<String> = []
    /// Topics the current batch appended to: their observers are notified after COMMIT.
    private(set) var appended: Set<String> = []
    /// Topics the current batch removed messages from: their `last_seq` is written before COMMIT. A topic's last
    /// sequence is otherwise its log's own (`MAX(seq)`, see `Schema.loadTopics`), so an append writes no topic row.
    private var trimmed: Set<String> = []
    private var needsReload = false

    /// Creates the tables when missing and reads the caches. Every lease is released: the deliveries they covered
    /// went with the process that made them, so their messages are delivered again at once (a nacked message's
    /// retry delay is released too; its attempt count is kept).
    init(connection: SQLiteConnection, limits: PubSubLimits) throws {
        self.connection = connection
        self.limits = limits
        self.gate = PubSubTrimGate(interval: limits.fullTrimInterval)
        try connection.execute(Schema.create)
        try connection.execute(Schema.releaseLeases)
        try reload()
    }

    // MARK: - Batches

    func begin() throws {
        if needsReload { try reload() }
        touched = []
        appended = []
        trimmed = []
        gate.begin()
        try connection.run("BEGIN IMMEDIATE")
    }

    func commit() throws {
        for name in trimmed {
            guard let row = topics[name] else { continue }
            try connection.run(Schema.updateTopic, .int64(row.id), .int64(Int64(row.last)))
        }
        try connection.run("COMMIT")
    }

    /// Undoes the batch and forgets what the caches learnt from it.
    func rollback() {
        try? connection.run("ROLLBACK")  // Fails only when no transaction is open, which is the state wanted.
        needsReload = true
        try? reload()
    }

    /// Reads the caches from the database.
    private func reload() throws {
        var topics: [String: TopicRow] = [:]
        var names: [Int64: String] = [:]
        try connection.withStatement(Schema.loadTopics) { statement in
            while try statement.step() {
                let id = statement.int64(0)
                let name = statement.text(1)
                topics[name] = TopicRow(id: id, last: UInt64(clamping: statement.int64(2)), bytes: 0)
                names[id] = name
            }
        }
        var total = 0
        var partitions: [String: Int] = [:]
        try connection.withStatement(Schema.loadUsage) { statement in
            while try statement.step() {
                guard let name = names[statement.int64(0)] else { continue }
                let bytes = Int(statement.int64(1))
                topics[name]?.bytes = bytes
                total += bytes
                if bytes > 0 { partitions[PubSubPartition.of(name), default: 0] += bytes }
            }
        }
        var consumers: [PubSubConsumer: ConsumerRow] = [:]
        try connection.withStatement(Schema.loadConsumers) { statement in
            while try statement.step() {
                let topicID = statement.int64(2)
                guard let topic = names[topicID] else { continue }
                consumers[PubSubConsumer(group: statement.text(1), topic: topic)] = ConsumerRow(
                    id: statement.int64(0), topicID: topicID, cursor: UInt64(clamping: statement.int64(3)))
            }
        }
        self.topics = topics
        self.topicNames = names
        self.consumers = consumers
        self.totalBytes = total
        self.partitions = partitions
        needsReload = false
    }

    // MARK: - Operations

    /// Appends the messages, after the checks of `PubSub.publish` against the caches (which include what the batch
    /// did so far, so the limits hold across the batch's publishes).
    func publish(
        _ messages: [PubSubMessage], to topic: String, partitionLimit: Int?, now: Int64
    ) throws -> [UInt64] {
        guard !topic.isEmpty else { throw PubSubError.invalidArgument("the topic is empty") }
        let bytes = messages.reduce(0) { $0 + $1.byteCount }
        if let refusal = limits.refusalOfSize(bytes) { throw refusal }
        let partition = PubSubPartition.of(topic)
        func refusal() -> PubSubError? {
            if let limit = partitionLimit, (partitions[partition] ?? 0) + bytes > limit {
                return .partitionFull(partition: partition, usage: (partitions[partition] ?? 0) + bytes, limit: limit)
            }
            if let limit = limits.maxRetainedBytes, totalBytes + bytes > limit {
                return .full(usage: totalBytes + bytes, limit: limit)
            }
            return nil
        }
        // Room is made by trimming only when the gate says it can help (not for every refused publish).
        if refusal() != nil, gate.shouldTrim(now: now) { try trim(now: now) }
        if let refused = refusal() { throw refused }
        var row = try topicRow(topic)
        let firstNew = row.last + 1
        var sequences: [UInt64] = []
        sequences.reserveCapacity(messages.count)
        for message in messages {
            row.last += 1
            let expiresAt: SQLiteValue =
                message.ttl.map { .int64(now.plusSaturating($0.saturatingMilliseconds)) } ?? .null
            try connection.run(
                Schema.insertMessage, .int64(row.id), .int64(Int64(row.last)), .int64(now), expiresAt,
                .int64(Int64(message.byteCount)), .text(message.contentType),
                .blob(PubSubMetadataCoding.encode(message.metadata)), .blob(message.data))
            sequences.append(row.last)
        }
        row.bytes += bytes
        totalBytes += bytes
        partitions[partition, default: 0] += bytes
        topics[topic] = row
        touched.insert(topic)
        appended.insert(topic)
        if let limit = limits.maxTopicBytes, row.bytes > limit {
            try trimOldest(of: topic, above: limit, before: firstNew)
        }
        return sequences
    }

    func ensure(_ consumer: PubSubConsumer) throws -> UInt64 {
        guard !consumer.topic.isEmpty else { throw PubSubError.invalidArgument("the topic is empty") }
        if let existing = consumers[consumer] { return existing.cursor }
        let topic = try topicRow(consumer.topic)
        let id = try connection.withStatement(Schema.insertConsumer) { statement in
            try statement.bind([.text(consumer.group), .int64(topic.id), .int64(Int64(topic.last))])
            guard try statement.step() else { throw Corruption("no id for a new consumer") }
            return statement.int64(0)
        }
        consumers[consumer] = ConsumerRow(id: id, topicID: topic.id, cursor: topic.last)
        return topic.last
    }

    func remove(_ consumer: PubSubConsumer) throws {
        guard let row = consumers[consumer] else { return }
        try connection.run(Schema.deleteConsumerPending, .int64(row.id))
        try connection.run(Schema.deleteConsumer, .int64(row.id))
        consumers[consumer] = nil
        gate.settled()
    }

    func fetch(_ consumer: PubSubConsumer, limit: Int, lease: Duration, now: Int64) throws -> PubSubFetchResult {
        guard limit > 0 else { throw PubSubError.invalidArgument("the fetch limit must be positive, not \(limit)") }
        guard var row = consumers[consumer], let topic = topics[consumer.topic] else {
            throw PubSubError.unknownConsumer(consumer)
        }
        let visibleAt = now.plusSaturating(lease.saturatingMilliseconds)
        var deliveries: [PubSubDelivery] = []

        // Redeliveries: pending messages visible again. Read first, then changed: the rows are not updated while
        // the statement that reads them is open.
        let due = try connection.withStatement(Schema.due) { statement in
            try statement.bind([.int64(row.id), .int64(topic.id), .int64(now), .int64(Int64(limit))])
            var due: [(sequence: UInt64, attempt: Int, stored: Stored?)] = []
            while try statement.step() {
                let stored = statement.isNull(2) ? nil : try Self.stored(statement, from: 2)
                due.append((UInt64(statement.int64(0)), Int(statement.int64(1)), stored))
            }
            return due
        }
        for (sequence, attempt, stored) in due {
            guard let stored, !stored.isExpired(now: now) else {
                try connection.run(Schema.deletePending, .int64(row.id), .int64(Int64(sequence)))
                continue
            }
            try connection.run(
                Schema.lease, .int64(row.id), .int64(Int64(sequence)), .int64(Int64(attempt + 1)), .int64(visibleAt))
            deliveries.append(stored.delivery(sequence, attempt: attempt + 1))
        }

        // New messages past the cursor, skipping expired ones.
        var cursor = row.cursor
        while deliveries.count < limit && cursor < topic.last {
            let batch = try connection.withStatement(Schema.after) { statement in
                try statement.bind([.int64(topic.id), .int64(Int64(cursor)), .int64(Int64(limit - deliveries.count))])
                var batch: [(UInt64, Stored)] = []
                while try statement.step() {
                    batch.append((UInt64(statement.int64(0)), try Self.stored(statement, from: 1)))
                }
                return batch
            }
            guard !batch.isEmpty else {
                cursor = topic.last  // Everything after the cursor was trimmed.
                break
            }
            for (sequence, stored) in batch {
                cursor = sequence
                guard !stored.isExpired(now: now) else { continue }
                try connection.run(Schema.insertPending, .int64(row.id), .int64(Int64(sequence)), .int64(visibleAt))
                deliveries.append(stored.delivery(sequence, attempt: 1))
            }
        }
        if cursor != row.cursor {
            try connection.run(Schema.updateCursor, .int64(row.id), .int64(Int64(cursor)))
            row.cursor = cursor
            consumers[consumer] = row
        }

        var next: Date?
        if deliveries.count < limit {
            next = try connection.withStatement(Schema.nextVisible) { statement in
                try statement.bind([.int64(row.id), .int64(now)])
                guard try statement.step(), !statement.isNull(0) else { return nil }
                return Self.date(statement.int64(0))
            }
        }
        return PubSubFetchResult(deliveries: deliveries, nextRedeliveryAt: next)
    }

    func ack(_ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID]) throws -> Int {
        guard let row = consumers[consumer] else { throw PubSubError.unknownConsumer(consumer) }
        var count = 0
        for id in ids {
            try connection.run(
                Schema.ack, .int64(row.id), .int64(Int64(clamping: id.sequence)), .int64(Int64(id.attempt)))
            count += connection.changes
        }
        if count > 0 { gate.settled() }
        return count
    }

    func nack(_ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], retryAfter: Duration, now: Int64) throws -> Int {
        guard let row = consumers[consumer] else { throw PubSubError.unknownConsumer(consumer) }
        let visibleAt = now.plusSaturating(max(retryAfter, .zero).saturatingMilliseconds)
        var count = 0
        for id in ids {
            try connection.run(
                Schema.nack, .int64(row.id), .int64(Int64(clamping: id.sequence)), .int64(Int64(id.attempt)),
                .int64(visibleAt))
            count += connection.changes
        }
        return count
    }

    /// Runs retention (see `PubSub`): expired messages, those older than the retention period, pending entries
    /// left without their message, then what every consumer has acknowledged. Removes at most about `budget`
    /// messages by retention and acknowledgement (expired ones are not counted), so that a large backlog is
    /// removed in several transactions rather than in one that holds the writer for its whole length. Returns how
    /// many messages it removed, and whether the budget left some to remove.
    @discardableResult
    func trim(now: Int64, budget: Int = .max) throws -> (removed: Int, more: Bool) {
        var removed = 0
        var budget = budget
        var more = false
        let expired = try connection.withStatement(Schema.expiredUsage) { statement in
            try statement.bind([.int64(now)])
            var expired: [(topicID: Int64, count: Int, bytes: Int)] = []
            while try statement.step() {
                expired.append((statement.int64(0), Int(statement.int64(1)), Int(statement.int64(2))))
            }
            return expired
        }
        if !expired.isEmpty {
            try connection.run(Schema.deleteExpired, .int64(now))
            for (topicID, count, bytes) in expired {
                guard let name = topicNames[topicID] else { continue }
                free(bytes, of: name)
                removed += count
            }
        }
        if let period = limits.retentionPeriod {
            let cutoff = now.plusSaturating(-period.saturatingMilliseconds)
            for (name, row) in topics where row.bytes > 0 {
                guard budget > 0 else {
                    more = true
                    break
                }
                let bound = try chunkEnd(of: row, budget: budget)
                let young = try connection.withStatement(Schema.firstYoung) { statement in
                    try statement.bind([.int64(row.id), .int64(cutoff), .int64(Int64(clamping: bound))])
                    return try statement.step() ? UInt64(statement.int64(0)) : nil
                }
                let count = try removeMessages(of: name, upTo: young.map { $0 - 1 } ?? bound)
                removed += count
                budget -= count
                if young == nil, bound < row.last { more = true }
            }
        }
        try connection.run(Schema.deleteDanglingPending)
        var watermarks: [Int64: UInt64] = [:]
        for row in consumers.values {
            let oldestPending = try connection.withStatement(Schema.oldestPending) { statement in
                try statement.bind([.int64(row.id)])
                return try statement.step() && !statement.isNull(0) ? UInt64(statement.int64(0)) : nil
            }
            let settled = min(row.cursor, oldestPending.map { $0 - 1 } ?? row.cursor)
            watermarks[row.topicID] = min(watermarks[row.topicID] ?? settled, settled)
        }
        for (name, row) in topics where row.bytes > 0 {
            guard budget > 0 else {
                more = true
                break
            }
            let target = watermarks[row.id] ?? row.last
            let bound = min(target, try chunkEnd(of: row, budget: budget))
            let count = try removeMessages(of: name, upTo: bound)
            removed += count
            budget -= count
            if bound < target { more = true }
        }
        gate.trimmed(now: now)
        return (removed, more)
    }

    /// The last sequence a removal of at most `budget` messages from the start of `row`'s topic may reach.
    private func chunkEnd(of row: TopicRow, budget: Int) throws -> UInt64 {
        guard budget < Int.max else { return row.last }
        let first = try connection.withStatement(Schema.firstSequence) { statement in
            try statement.bind([.int64(row.id)])
            return try statement.step() && !statement.isNull(0) ? UInt64(statement.int64(0)) : nil
        }
        guard let first else { return row.last }
        return min(row.last, first + UInt64(max(budget, 1)) - 1)
    }

    // MARK: - Helpers

    /// The database holds or answers something it cannot: fails the whole batch (unlike a `PubSubError`).
    struct Corruption: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    /// A message row as read by `due` and `after`.
    struct Stored {
        var message: PubSubMessage
        var publishedAt: Int64
        var expiresAt: Int64?

        func isExpired(now: Int64) -> Bool { expiresAt.map { $0 <= now } ?? false }

        func delivery(_ sequence: UInt64, attempt: Int) -> PubSubDelivery {
            PubSubDelivery(
                sequence: sequence, attempt: attempt, message: message,
                publishedAt: SQLitePubSubWriter.date(publishedAt), expiresAt: expiresAt.map(SQLitePubSubWriter.date))
        }
    }

    /// Reads published_at, expires_at, content_type, metadata and data from `column` on.
    private static func stored(_ statement: SQLiteStatement, from column: Int32) throws -> Stored {
        guard let metadata = PubSubMetadataCoding.decode(statement.blob(column + 3)) else {
            throw Corruption("a stored message has malformed metadata")
        }
        let expiresAt = statement.isNull(column + 1) ? nil : statement.int64(column + 1)
        let message = PubSubMessage(
            data: statement.blob(column + 4), contentType: statement.text(column + 2), metadata: metadata,
            ttl: expiresAt.map { .milliseconds($0 - statement.int64(column)) })
        return Stored(message: message, publishedAt: statement.int64(column), expiresAt: expiresAt)
    }

    static func date(_ milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// The topic's row, created (with no message yet) when missing.
    private func topicRow(_ name: String) throws -> TopicRow {
        if let row = topics[name] { return row }
        let id = try connection.withStatement(Schema.insertTopic) { statement in
            try statement.bind([.text(name)])
            guard try statement.step() else { throw Corruption("no id for a new topic") }
            return statement.int64(0)
        }
        let row = TopicRow(id: id, last: 0, bytes: 0)
        topics[name] = row
        topicNames[id] = name
        touched.insert(name)
        return row
    }

    /// Removes the topic's messages up to `sequence` included; returns how many there were.
    private func removeMessages(of name: String, upTo sequence: UInt64) throws -> Int {
        guard let row = topics[name], sequence > 0 else { return 0 }
        let parameters: [SQLiteValue] = [.int64(row.id), .int64(Int64(clamping: sequence))]
        let (count, bytes) = try connection.withStatement(Schema.rangeUsage) { statement in
            try statement.bind(parameters)
            return try statement.step() ? (Int(statement.int64(0)), Int(statement.int64(1))) : (0, 0)
        }
        guard count > 0 else { return 0 }
        try connection.withStatement(Schema.deleteRange) { statement in
            try statement.bind(parameters)
            while try statement.step() {}
        }
        free(bytes, of: name)
        return count
    }

    /// Removes the topic's oldest messages before `firstNew` until it holds at most `limit` bytes.
    private func trimOldest(of name: String, above limit: Int, before firstNew: UInt64) throws {
        guard let row = topics[name] else { return }
        var excess = row.bytes - limit
        let upTo = try connection.withStatement(Schema.oldest) { statement in
            try statement.bind([.int64(row.id), .int64(Int64(firstNew))])
            var upTo: UInt64 = 0
            while excess > 0, try statement.step() {
                upTo = UInt64(statement.int64(0))
                excess -= Int(statement.int64(1))
            }
            return upTo
        }
        _ = try removeMessages(of: name, upTo: upTo)
    }

    private func free(_ bytes: Int, of name: String) {
        trimmed.insert(name)
        topics[name]?.bytes -= bytes
        totalBytes -= bytes
        let partition = PubSubPartition.of(name)
        let left = (partitions[partition] ?? 0) - bytes
        partitions[partition] = left > 0 ? left : nil
        touched.insert(name)
    }
}

extension Int64 {
    func plusSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other < 0 ? .min : .max) : sum
    }
}
