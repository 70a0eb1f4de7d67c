import HangarComponents
import NIOCore
import HangarSync

/// The one blocking read of one consumer group on this node, whatever the number of topics it consumes here:
/// `XREADGROUP GROUP g g COUNT queueDepth BLOCK ... STREAMS t1 t2 ... > > ...` on a connection of its own
/// (`RedisDedicatedConnection`), issued again as soon as it answers, and at once when its topics change (the
/// blocked command is ended with `CLIENT UNBLOCK`, sent over the shared connections). Topics whose consumer's
/// buffer is full are left out until a fetch makes room.
///
/// It is also the only reader of the group's new entries on this node: a fetch that wants more than is buffered
/// asks for a read now (`readNow`), served by a round without `BLOCK` once the blocked one has ended. So the
/// entries of a topic reach its buffer in stream order, whichever fetch asked.
///
/// Every `redeliverInterval` it has the component reclaim the group's entries left idle by others.
final class RedisGroupReader: Sendable {
    private enum Phase {
        case idle
        /// A blocking read is in flight over these topics; `unblocked` once `CLIENT UNBLOCK` was sent for it.
        case blocking(topics: Set<String>, unblocked: Bool, round: Int)
        /// A read without BLOCK is in flight.
        case reading
        /// The connection failed; rounds resume after the backoff. Reads asked meanwhile fail at once.
        case backoff(PubSubError)
        case closed
    }

    /// A read asked by a fetch: completed when a round that began after it has ended.
    private struct Waiter {
        var topic: String
        var count: Int
        var promise: EventLoopPromise<Void>
    }

    private struct State {
        var topics: [String] = []
        var waiters: [Waiter] = []
        var phase = Phase.idle
        var round = 0
        var reclaimTask: RepeatedTask?
    }

    let group: String
    private let owner: RedisPubSub
    private let eventLoop: any EventLoop
    let connection: RedisDedicatedConnection
    private let state = Locked(State())

    init(group: String, owner: RedisPubSub, on eventLoop: any EventLoop) {
        self.group = group
        self.owner = owner
        self.eventLoop = eventLoop
        connection = RedisDedicatedConnection(owner.readerConfiguration, options: owner.client.options, on: eventLoop)
        let interval = owner.settings.redeliverInterval
        if interval > .zero, owner.settings.processingTimeout > .zero {
            let task = eventLoop.scheduleRepeatedTask(initialDelay: TimeAmount(interval), delay: TimeAmount(interval)) {
                [weak self] _ in
                guard let self else { return }
                self.owner.reclaim(group: self.group, topics: self.state.withLock { $0.topics })
            }
            state.withLock { $0.reclaimTask = task }
        }
    }

    var topicCount: Int { state.withLock { $0.topics.count } }

    /// Adds a topic to the read (a new consumer of the group).
    func add(_ topic: String) {
        let added = state.withLock { state -> Bool in
            guard !state.topics.contains(topic) else { return false }
            state.topics.append(topic)
            return true
        }
        if added { topicsChanged() }
    }

    func remove(_ topic: String) {
        state.withLock { $0.topics.removeAll { $0 == topic } }
        topicsChanged()
    }

    /// The topics or their room changed: the blocked read is issued again (or a round starts when none runs).
    func topicsChanged() {
        let action = state.withLock { state -> Action in
            switch state.phase {
            case .idle: return .start
            case .blocking(let topics, false, let round):
                state.phase = .blocking(topics: topics, unblocked: true, round: round)
                return .unblock(round)
            default: return .none
            }
        }
        perform(action)
    }

    /// Completes once a read that began after this call has ended, having buffered what it read for `topic`
    /// (up to `count` entries, at least `queueDepth`). Fails at once while the connection is in backoff.
    func readNow(_ topic: String, count: Int) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        let action = state.withLock { state -> Action in
            switch state.phase {
            case .closed:
                return .fail(PubSubError.closed)
            case .backoff(let error):
                return .fail(error)
            case .idle:
                state.waiters.append(Waiter(topic: topic, count: count, promise: promise))
                return .start
            case .blocking(let topics, let unblocked, let round):
                state.waiters.append(Waiter(topic: topic, count: count, promise: promise))
                if unblocked { return .none }
                state.phase = .blocking(topics: topics, unblocked: true, round: round)
                return .unblock(round)
            case .reading:
                state.waiters.append(Waiter(topic: topic, count: count, promise: promise))
                return .none
            }
        }
        if case .fail(let error) = action {
            promise.fail(error)
        } else {
            perform(action)
        }
        return promise.futureResult
    }

    private enum Action {
        case none
        case start
        case unblock(Int)
        case fail(PubSubError)
    }

    private func perform(_ action: Action) {
        switch action {
        case .none, .fail: break
        case .start: eventLoop.execute { self.cycle() }
        case .unblock(let round): unblock(round, attempts: 1000)
        }
    }

    /// Ends the blocked read of `round` with `CLIENT UNBLOCK`. The command may reach the server before the read
    /// it ends (they travel on different connections), or the connection may still be opening: then it is tried
    /// again every 2 ms, as long as that round is still blocked, for up to 2 s (a connection being opened on a
    /// loaded machine); after that the read ends by its own timeout.
    private func unblock(_ round: Int, attempts: Int) {
        @Sendable func stillBlocked() -> Bool {
            state.withLock { state in
                if case .blocking(_, _, round) = state.phase { return true }
                return false
            }
        }
        @Sendable func retry() {
            guard attempts > 0, stillBlocked() else { return }
            eventLoop.scheduleTask(in: .milliseconds(2)) { self.unblock(round, attempts: attempts - 1) }
        }
        guard let id = connection.clientID else { return retry() }
        owner.command(["CLIENT", "UNBLOCK", .integer(id)]).whenComplete { result in
            if case .success(.integer(let unblocked)) = result, unblocked == 1 { return }
            retry()
        }
    }

    /// One round: the waiters' read without BLOCK when some wait, else the blocking read over the topics with
    /// room; nothing when there is none (a later change starts it again).
    private func cycle() {
        let topics = state.withLock { $0.topics }
        let roomy = owner.topicsWithRoom(group: group, among: topics)
        let settings = owner.settings
        enum Plan {
            case read(topics: [String], count: Int, waiters: [Waiter], block: Duration?)
            case park
        }
        let plan = state.withLock { state -> Plan in
            guard case .idle = state.phase else { return .park }
            if !state.waiters.isEmpty {
                let waiters = state.waiters
                state.waiters = []
                var wanted: [String] = []
                for waiter in waiters where !wanted.contains(waiter.topic) && state.topics.contains(waiter.topic) {
                    wanted.append(waiter.topic)
                }
                state.phase = .reading
                let count = max(settings.queueDepth, waiters.map(\.count).max() ?? 0)
                return .read(topics: wanted, count: count, waiters: waiters, block: nil)
            }
            let live = roomy.filter { state.topics.contains($0) }
            guard !live.isEmpty else { return .park }
            state.round += 1
            state.phase = .blocking(topics: Set(live), unblocked: false, round: state.round)
            return .read(topics: live, count: settings.queueDepth, waiters: [], block: settings.blockTimeout)
        }
        guard case .read(let topics, let count, let waiters, let block) = plan else { return }
        if topics.isEmpty {
            // Waiters for topics removed meanwhile.
            state.withLock { $0.phase = .idle }
            for waiter in waiters { waiter.promise.succeed() }
            return cycle()
        }
        var arguments: [RESPArgument] = [
            "XREADGROUP", "GROUP", .string(group), .string(group), "COUNT", .integer(Int64(count)),
        ]
        var deadline = NIODeadline.now() + settings.commandTimeout
        if let block {
            arguments += ["BLOCK", .integer(RedisPubSub.milliseconds(block))]
            deadline = deadline + TimeAmount(block)
        }
        arguments += ["STREAMS"] + topics.map { .string($0) } + topics.map { _ in ">" }
        connection.send(arguments, deadline: deadline).whenComplete { result in
            switch result {
            case .success(let reply):
                self.owner.noteOutcome(.success(()))
                self.owner.received(group: self.group, RedisStreamEntry.streams(reply))
                self.endRound(waiters: waiters, error: nil)
                self.cycle()
            case .failure(let error) where RedisPubSub.isNoGroup(error):
                // The group (or the stream) vanished: the server lost its data or someone destroyed it. Create
                // it again, then read again; the waiters wait for that read.
                let creates = topics.map { self.owner.createGroup(self.group, topic: $0, fromStart: true) }
                EventLoopFuture.andAllSucceed(creates, on: self.eventLoop).whenComplete { created in
                    switch created {
                    case .success:
                        self.state.withLock { state in
                            state.waiters = waiters + state.waiters
                            if case .closed = state.phase { return }
                            state.phase = .idle
                        }
                        self.cycle()
                    case .failure(let error):
                        self.failed(error, waiters: waiters)
                    }
                }
            case .failure(let error):
                self.failed(error, waiters: waiters)
            }
        }
    }

    /// Ends a round: the reader is idle again and the waiters it served complete.
    private func endRound(waiters: [Waiter], error: PubSubError?) {
        state.withLock { state in
            if case .closed = state.phase { return }
            state.phase = .idle
        }
        for waiter in waiters {
            if let error { waiter.promise.fail(error) } else { waiter.promise.succeed() }
        }
    }

    /// A round failed: its waiters (and those that came meanwhile) fail, and rounds resume after the backoff.
    private func failed(_ error: any Error, waiters: [Waiter]) {
        owner.noteOutcome(.failure(error))
        let reason = owner.isClosed ? PubSubError.closed : owner.pubsubError(error)
        let more = state.withLock { state -> [Waiter]? in
            if case .closed = state.phase { return nil }
            state.phase = .backoff(reason)
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters + (more ?? []) { waiter.promise.fail(reason) }
        guard more != nil else { return }
        let delay = max(connection.retryDelay, .milliseconds(100))
        eventLoop.scheduleTask(in: delay) {
            self.state.withLock { state in
                if case .backoff = state.phase { state.phase = .idle }
            }
            self.cycle()
        }
    }

    /// Stops reading: the connection closes (ending a blocked read), waiters fail.
    func close() -> EventLoopFuture<Void> {
        let (waiters, task) = state.withLock { state -> ([Waiter], RepeatedTask?) in
            state.phase = .closed
            defer {
                state.waiters = []
                state.reclaimTask = nil
            }
            return (state.waiters, state.reclaimTask)
        }
        task?.cancel()
        for waiter in waiters { waiter.promise.fail(PubSubError.closed) }
        return connection.close()
    }
}
