import Foundation
package import HangarComponents
package import Logging
package import NIOCore
package import NIOPosix
import Synchronization
import HangarSync

/// `pubsub.sqlite`: Hangar's durable embedded pub/sub, one SQLite file in WAL mode (schema in
/// `SQLitePubSubSchema`): an append-only log per topic, and per consumer (group, topic) a cursor and its pending
/// messages with their leases.
///
/// **Group commit.** Every operation — publish, fetch, ack, nack, consumer changes, trimming — is a job on one
/// queue, run by one writer connection on the `NIOThreadPool`. Jobs that arrive while a transaction is being
/// committed wait and go together into the next one (up to `maxBatch`), so N concurrent publishers cost about one
/// commit, not N. A job's future completes only after the transaction holding it has committed; the futures of a
/// batch complete with one task per event loop. A job queued on an idle writer by an event loop starts the drain
/// once that loop has handled its turn, so that the requests it read together share the first commit too.
///
/// **Failure isolation.** An operation refused for a reason of its own (`PubSubError`: full, unknown consumer)
/// fails alone and the batch commits. One that spoils the transaction (a SQLite error, a corrupt row) rolls the
/// whole batch back; then every operation of the batch runs again in a transaction of its own, so that only the
/// failing one fails and the others' publishes, acks and fetches go through (a rare, slower path: one commit per
/// operation).
///
/// **Durability.** WAL with `synchronous=NORMAL` (the default): a commit is in the WAL file when its futures
/// complete, so it survives a crash or `kill -9` of the daemon; a power loss or kernel crash may lose the last
/// commits before the next checkpoint. `synchronous: full` adds an fsync per commit, which group commit shares
/// among the batch, for durability against power loss too.
///
/// **Checkpoints** run on a second connection beside the writer, not inside its commits
/// (`SQLitePubSubCheckpointer`); the WAL stays bounded. **Trimming** removes at most `trimChunk` messages per
/// transaction.
///
/// Byte accounting, topic sequences and consumer cursors are cached in memory by the writer
/// (`SQLitePubSubWriter`), changed with each batch and published (`usageByTopic`, `lastSequence(of:)`) after it
/// commits; this component must be the database's only writer.
package final class SQLitePubSub: PubSub {
    /// Where the component keeps its data and what it keeps.
    package struct Configuration: Sendable, Hashable {
        /// A file path (parent directories are created), `:memory:`, or a SQLite `file:` URI.
        package var path: String
        package var limits: PubSubLimits
        /// How long the connection waits for a lock held by another process before failing.
        package var busyTimeout: Duration
        /// SQLite's `synchronous` setting: `NORMAL` (crash-safe) or `FULL` (power-loss-safe).
        package var synchronousFull: Bool

        package init(
            path: String, limits: PubSubLimits = PubSubLimits(), busyTimeout: Duration = .seconds(2),
            synchronousFull: Bool = false
        ) {
            self.path = path
            self.limits = limits
            self.busyTimeout = busyTimeout
            self.synchronousFull = synchronousFull
        }
    }

    /// One operation waiting for a batch.
    private struct Job: Sendable {
        typealias Completion = @Sendable (_ batchFailure: PubSubError?) -> Void
        let eventLoop: any EventLoop
        /// Runs the operation inside the batch's transaction and returns how to complete it once the batch is
        /// settled. Throws only what spoils the transaction (never a `PubSubError`).
        let execute: @Sendable (SQLitePubSubWriter) throws -> Completion
        /// Fails the operation without running it.
        let fail: @Sendable (PubSubError) -> Void
    }

    private struct Queue {
        var jobs: [Job] = []
        var draining = false
        var closed = false
    }

    /// What readers see between batches: each topic's last sequence and bytes, as committed.
    private struct TopicStats: Sendable {
        var last: UInt64
        var bytes: Int
    }

    /// The committed figures readers see: per topic, and bytes per partition (kept, not summed when read).
    private struct Stats: Sendable {
        var topics: [String: TopicStats]
        var partitions: [String: Int]
    }

    /// What a committed transaction changed, published to `stats` and the observers after it.
    private struct Committed: Sendable {
        var completions: [Job.Completion]
        var topics: [(String, TopicStats)]
        var partitions: [(String, Int)]
        var appended: [String]
        var trimsForRoom: Int
    }

    /// The most jobs one transaction takes: bounds how long a job waits behind a batch.
    package static let maxBatch = 1024

    /// TTL, bulk publish, and durable.
    package let features: PubSubFeatures = [.messageTTL, .bulkPublish, .durable]
    /// Always false: operations run on the thread pool and complete their futures later.
    package var executesInline: Bool { false }
    package let configuration: Configuration
    package var ackTimeout: Duration { configuration.limits.ackTimeout }

    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let queue = Locked(Queue())
    /// Nil once closed. Locked by the drain for a whole batch (it is the only user while the component is open).
    private let writer: Locked<SQLitePubSubWriter?>
    /// Checkpoints the WAL beside the writer; nil for an in-memory database, which has no WAL.
    private let checkpointer: SQLitePubSubCheckpointer?
    private let stats: Locked<Stats>
    private let trimCount = Atomic<Int>(0)
    private let observers = PubSubTopicObservers()
    private let cleanup = Locked<RepeatedTask?>(nil)

    /// Opens the database (blocking: meant for start-up), creating the file, its parent directories and the tables
    /// when missing, and schedules the periodic `trim` on `eventLoopGroup` when `cleanupInterval` is set.
    package init(
        configuration: Configuration, threadPool: NIOThreadPool, eventLoopGroup: any EventLoopGroup, logger: Logger
    ) throws {
        guard !configuration.path.isEmpty else { throw PubSubError.invalidArgument("the SQLite path is empty") }
        self.configuration = configuration
        self.threadPool = threadPool
        var logger = logger
        logger[metadataKey: "sqlite.path"] = "\(configuration.path)"
        self.logger = logger

        let path = configuration.path
        let inMemory = SQLiteConnection.isInMemory(path)
        if let problem = SQLiteConnection.createDirectory(for: path) { throw PubSubError.backend(problem) }
        do {
            let connection = try SQLiteConnection(path: path, busyTimeout: configuration.busyTimeout)
            let journalMode = try connection.enableWAL()
            try connection.execute("PRAGMA synchronous = \(configuration.synchronousFull ? "FULL" : "NORMAL")")
            if !inMemory && journalMode.lowercased() != "wal" {
                logger.warning(
                    "SQLite refused WAL mode: commits will be slower",
                    metadata: ["sqlite.journal_mode": "\(journalMode)"])
            }
            if !inMemory && journalMode.lowercased() == "wal" {
                let checkpointer = try SQLitePubSubCheckpointer(
                    path: path, busyTimeout: configuration.busyTimeout,
                    synchronousFull: configuration.synchronousFull, threadPool: threadPool, logger: logger)
                try connection.recordWALFrames(in: checkpointer.frames)
                // A WAL that grew (a long checkpoint under load) is cut back when it starts again.
                try connection.execute("PRAGMA journal_size_limit = \(SQLitePubSubCheckpointer.fileLimit)")
                self.checkpointer = checkpointer
            } else {
                self.checkpointer = nil
            }
            let writer = try SQLitePubSubWriter(connection: connection, limits: configuration.limits)
            self.stats = Locked(
                Stats(
                    topics: writer.topics.mapValues { TopicStats(last: $0.last, bytes: $0.bytes) },
                    partitions: writer.partitions))
            self.writer = Locked(writer)
        } catch {
            throw Self.pubSubError(error)
        }

        if let interval = configuration.limits.cleanupInterval {
            let eventLoop = eventLoopGroup.next()
            let task = eventLoop.scheduleRepeatedAsyncTask(
                initialDelay: TimeAmount(interval), delay: TimeAmount(interval)
            ) { [weak self] task in
                guard let self else {
                    task.cancel()
                    return eventLoop.makeSucceededVoidFuture()
                }
                return self.trim(on: eventLoop).map { removed in
                    if removed > 0 { self.logger.debug("trimmed messages", metadata: ["pubsub.trimmed": "\(removed)"]) }
                }.recover { error in
                    guard error as? PubSubError != .closed else { return }
                    self.logger.warning("trimming messages failed", metadata: ["error": "\(error)"])
                }
            }
            cleanup.withLock { $0 = task }
        }
    }

    package var usageByTopic: [String: Int] {
        stats.withLock { $0.topics.compactMapValues { $0.bytes > 0 ? $0.bytes : nil } }
    }

    package var usageByPartition: [String: Int] { stats.withLock { $0.partitions } }

    package func retainedBytes(inPartition partition: String) -> Int {
        stats.withLock { $0.partitions[partition] ?? 0 }
    }

    /// How many trims refused publishes ran, as committed (see `PubSubTrimGate`; for tests).
    package var trimsForRoom: Int { trimCount.load(ordering: .relaxed) }

    package func lastSequence(of topic: String) -> UInt64 {
        stats.withLock { $0.topics[topic]?.last ?? 0 }
    }

    package func publish(
        _ messages: [PubSubMessage], to topic: String, partitionLimit: Int?, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]> {
        .later(
            enqueue(on: eventLoop) { writer in
                try writer.publish(messages, to: topic, partitionLimit: partitionLimit, now: Self.now())
            })
    }

    package func ensureConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<UInt64> {
        .later(enqueue(on: eventLoop) { writer in try writer.ensure(consumer) })
    }

    package func removeConsumer(_ consumer: PubSubConsumer, on eventLoop: any EventLoop) -> Eventual<Void> {
        .later(enqueue(on: eventLoop) { writer in try writer.remove(consumer) })
    }

    package func fetch(
        _ consumer: PubSubConsumer, limit: Int, lease: Duration?, on eventLoop: any EventLoop
    ) -> Eventual<PubSubFetchResult> {
        let lease = lease ?? configuration.limits.ackTimeout
        return .later(
            enqueue(on: eventLoop) { writer in
                try writer.fetch(consumer, limit: limit, lease: lease, now: Self.now())
            })
    }

    package func ack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        .later(enqueue(on: eventLoop) { writer in try writer.ack(consumer, ids) })
    }

    package func nack(
        _ consumer: PubSubConsumer, _ ids: [PubSubDeliveryID], retryAfter: Duration, on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        .later(
            enqueue(on: eventLoop) { writer in
                try writer.nack(consumer, ids, retryAfter: retryAfter, now: Self.now())
            })
    }

    /// The most messages one trimming transaction removes by retention and acknowledgement: a backlog of acked
    /// messages (after a burst) is removed in transactions of this size, each a job like any other, so that
    /// publishes go on between them. In one transaction, 250,000 messages held the writer for half a second.
    static let trimChunk = 2048

    package func trim(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        trim(on: eventLoop, removedBefore: 0)
    }

    /// Trims one chunk (`trimChunk`), then queues the next while there is more to remove.
    private func trim(on eventLoop: any EventLoop, removedBefore: Int) -> EventLoopFuture<Int> {
        enqueue(on: eventLoop) { writer in try writer.trim(now: Self.now(), budget: Self.trimChunk) }.flatMap {
            removed, more in
            guard more else { return eventLoop.makeSucceededFuture(removedBefore + removed) }
            return self.trim(on: eventLoop, removedBefore: removedBefore + removed)
        }
    }

    package func observe(topic: String, _ handler: @escaping @Sendable (UInt64) -> Void) -> PubSubObservation {
        observers.observe(topic: topic, handler)
    }

    /// Stops the cleanup, refuses new operations, lets the batch under way finish, then closes the connection
    /// (checkpointing the WAL). Jobs queued but not yet started fail with `.closed`. Closing twice succeeds.
    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let first = queue.withLock { queue in
            defer { queue.closed = true }
            return !queue.closed
        }
        guard first else { return eventLoop.makeSucceededVoidFuture() }
        cleanup.withLock { task in
            task?.cancel()
            task = nil
        }
        observers.close()
        let closeWriter: @Sendable () -> Void = { [self] in
            // The writer's connection closes last: as the database's last connection, it checkpoints the WAL and
            // removes it.
            checkpointer?.close()
            writer.withLock { writer in
                writer?.connection.close()
                writer = nil
            }
        }
        return threadPool.runIfActive(eventLoop: eventLoop, closeWriter).flatMapError { _ in
            eventLoop.makeCompletedFuture(Result { closeWriter() })
        }.map {
            self.logger.debug("closed SQLite pub/sub")
        }
    }

    /// How many observations are registered (for tests).
    package var observerCount: Int { observers.count }

    /// The frames the WAL held after the last commit; nil without a WAL (for tests).
    package var walFrames: Int? { checkpointer?.frames.count }

    // MARK: - The queue and its drain

    /// Queues `body` for the next batch; its future completes once that batch has committed.
    private func enqueue<Value: Sendable>(
        on eventLoop: any EventLoop, _ body: @escaping @Sendable (SQLitePubSubWriter) throws -> Value
    ) -> EventLoopFuture<Value> {
        let promise = eventLoop.makePromise(of: Value.self)
        let job = Job(
            eventLoop: eventLoop,
            execute: { writer in
                let value: Value
                do {
                    value = try body(writer)
                } catch let error as PubSubError {
                    return { _ in promise.fail(error) }
                }
                return { failure in
                    if let failure { promise.fail(failure) } else { promise.succeed(value) }
                }
            },
            fail: { promise.fail($0) })
        let start = queue.withLock { queue -> Bool? in
            guard !queue.closed else { return nil }
            queue.jobs.append(job)
            guard !queue.draining else { return false }
            queue.draining = true
            return true
        }
        switch start {
        case nil: promise.fail(PubSubError.closed)
        case true? where eventLoop.inEventLoop:
            // Called from the event loop (a request being handled): the drain starts once the loop has handled
            // every request of this turn, which then share the batch's one commit. Started at once, the writer
            // would commit the first request alone while the loop reads the others.
            eventLoop.execute { [self] in submitDrain() }
        case true?: submitDrain()
        case false?: break
        }
        return promise.futureResult
    }

    private func submitDrain() {
        threadPool.submit { [self] state in drain(poolActive: state == .active) }
    }

    /// Runs one batch, then hands the thread back to the pool and queues itself again while jobs remain, so that
    /// other work on the pool (state stores, other components) interleaves with a steady stream of batches. One
    /// drain at a time (`Queue.draining`).
    private func drain(poolActive: Bool) {
        let jobs = queue.withLock { queue -> [Job] in
            let count = min(queue.jobs.count, Self.maxBatch)
            let jobs = Array(queue.jobs.prefix(count))
            queue.jobs.removeFirst(count)
            return jobs
        }
        if poolActive {
            runBatch(jobs)
            if let checkpointer {
                writer.withLock { writer in
                    if let writer { checkpointer.afterBatch(writer: writer.connection) }
                }
            }
        } else {
            for job in jobs { job.fail(.backend("the SQLite thread pool is not running")) }
        }
        let more = queue.withLock { queue in
            if queue.jobs.isEmpty { queue.draining = false }
            return queue.draining
        }
        if more { submitDrain() }
    }

    /// Runs `jobs` in one transaction, then completes them and notifies the topics' observers. When the transaction
    /// fails, each job runs again alone (see "Failure isolation" above).
    private func runBatch(_ jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        switch transaction(jobs) {
        case .success(let committed):
            settle(jobs, committed)
        case .failure(let failure) where jobs.count == 1 || failure == .closed:
            for job in jobs { job.fail(failure) }
        case .failure(let failure):
            logger.warning(
                "a pub/sub batch failed and was rolled back; its operations run again one by one",
                metadata: ["error": "\(failure)", "pubsub.batch": "\(jobs.count)"])
            for job in jobs {
                switch transaction([job]) {
                case .success(let committed): settle([job], committed)
                case .failure(let failure): job.fail(failure)
                }
            }
        }
    }

    /// Runs `jobs` in one transaction: what it changed once committed, or why it was rolled back.
    private func transaction(_ jobs: [Job]) -> Result<Committed, PubSubError> {
        writer.withLock { writer -> Result<Committed, PubSubError> in
            guard let writer else { return .failure(.closed) }
            do {
                try writer.begin()
                var completions: [Job.Completion] = []
                completions.reserveCapacity(jobs.count)
                for job in jobs { completions.append(try job.execute(writer)) }
                try writer.commit()
                let topics = writer.touched.compactMap { name in
                    writer.topics[name].map { (name, TopicStats(last: $0.last, bytes: $0.bytes)) }
                }
                let partitions = Set(writer.touched.map(PubSubPartition.of)).map { ($0, writer.partitions[$0] ?? 0) }
                return .success(
                    Committed(
                        completions: completions, topics: topics, partitions: partitions,
                        appended: Array(writer.appended), trimsForRoom: writer.trimsForRoom))
            } catch {
                writer.rollback()
                let failure = Self.pubSubError(error)
                logger.warning("a pub/sub transaction failed and was rolled back", metadata: ["error": "\(failure)"])
                return .failure(failure)
            }
        }
    }

    /// Publishes what a committed transaction changed, completes its jobs and notifies the topics' observers.
    private func settle(_ jobs: [Job], _ committed: Committed) {
        if !committed.topics.isEmpty {
            stats.withLock { stats in
                for (name, topic) in committed.topics { stats.topics[name] = topic }
                for (partition, bytes) in committed.partitions { stats.partitions[partition] = bytes > 0 ? bytes : nil }
            }
        }
        trimCount.store(committed.trimsForRoom, ordering: .relaxed)
        Self.complete(jobs, committed.completions)
        if !committed.appended.isEmpty {
            let lasts = stats.withLock { stats in
                committed.appended.map { (topic: $0, last: stats.topics[$0]?.last ?? 0) }
            }
            observers.notify(lasts)
        }
    }

    /// Completes a committed batch's jobs with one task per event loop (rather than one hop per job).
    private static func complete(_ jobs: [Job], _ completions: [Job.Completion]) {
        var byLoop: [ObjectIdentifier: (any EventLoop, [Job.Completion])] = [:]
        for (job, completion) in zip(jobs, completions) {
            byLoop[ObjectIdentifier(job.eventLoop), default: (job.eventLoop, [])].1.append(completion)
        }
        for (eventLoop, completions) in byLoop.values {
            eventLoop.execute {
                for completion in completions { completion(nil) }
            }
        }
    }

    private static func pubSubError(_ error: any Error) -> PubSubError {
        switch error {
        case let error as PubSubError: error
        case let error as SQLiteError: .backend(error.description)
        default: .backend("\(error)")
        }
    }

    private static func now() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }
}
