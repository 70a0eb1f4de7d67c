package import NIOCore
import HangarSync

/// One Redis server for the whole node: a few pipelined connections shared by every caller (a component's pool,
/// whatever the number of tenants and apps using it), opened as the load asks for them. A command goes to the open
/// connection with the fewest commands waiting; another connection is opened only when every open one has
/// `pipelineDepth` waiting, up to `maxConnections` (Dapr's `poolSize`). Pipelining is what makes few connections
/// enough (reference "B.3": one connection carries ~100k commands/s).
///
/// An outage fails fast: when a connection cannot be made, every command fails at once with that error until a
/// backoff has passed (100 ms doubling to 2 s, with jitter); then the next command tries again, so a server that
/// comes back is used again within about 2 s, with no restart. A connection that closes is dropped (its waiting
/// commands fail; they may or may not have run) and replaced on demand.
///
/// Blocking commands (`XREADGROUP BLOCK`) and transactions do not belong here: they need a connection of their
/// own (`RedisConnection.connect`).
///
/// What it takes from postgres-nio's pool (`_ConnectionPoolModule`), and what not: a maximum of connections, opened
/// on demand; several requests per connection (here, a pipeline of up to `pipelineDepth` before another connection
/// is opened, where postgres-nio's `maximalStreamsOnConnection` multiplexes streams); a circuit breaker in the form
/// of the fail-fast backoff (postgres-nio backs off its connection attempts and fails waiting requests when
/// connecting keeps failing); keep-alive, as the state store's periodic `PING`; closing idle connections, but only
/// those beyond the first on each event loop (`idleTimeout`: the extra ones a stall or a burst opened). Not taken: a
/// minimum of idle connections kept open, and leasing a connection to one request at a time (Redis replies in
/// order, so one connection serves many callers at once; only transactions would need a lease, and `state.redis`
/// runs them as one Lua script instead).
package final class RedisClient: Sendable {
    /// How connections are opened and shared.
    package struct Options: Sendable, Hashable {
        /// The most connections (Dapr's `poolSize`; its default there is 10 per CPU per sidecar).
        package var maxConnections = 8
        /// Commands waiting on every open connection before another is opened.
        package var pipelineDepth = 32
        /// Commands that may wait for a connection being made when none is open; more fail at once.
        package var maxQueued = 16_384
        package var initialBackoff = TimeAmount.milliseconds(100)
        package var maxBackoff = TimeAmount.seconds(2)
        /// How long a connection beyond the first on its event loop may stay without a command in flight before it
        /// is closed (nil: never). Such connections are opened when every pipeline is full (a stall, a burst); the
        /// first one on each event loop stays open.
        package var idleTimeout: TimeAmount? = .seconds(30)

        package init() {}
    }

    private struct Slot {
        let id: Int
        let connection: RedisConnection
        /// The connection's counts of commands sent and completed when last looked at (`sweepIdle`), and since when
        /// they have been so.
        var seen: (sent: Int, completed: Int, since: NIODeadline)

        var eventLoop: any EventLoop { connection.channel.eventLoop }

        /// Counts a command sent on the connection, before it is (under the client's lock, so that `sweepIdle` never
        /// finds a connection idle that a command has chosen); the connection.
        func counted() -> RedisConnection {
            connection.counters.sent.add(1, ordering: .relaxed)
            return connection
        }
    }

    private struct Queued {
        let arguments: [RESPArgument]
        let deadline: NIODeadline
        let key: String?
        let reply: RedisCommandHandler.Reply
    }

    private struct State {
        var slots: [Slot] = []
        var connecting = 0
        /// Commands waiting for a connection being made (there was none open).
        var queued: [Queued] = []
        /// For each order key with commands in flight: their connection and how many there are.
        var ordered: [String: (slot: Int, count: Int)] = [:]
        var failing: (until: NIODeadline, error: RedisError)?
        /// The last connection attempt's error, until one succeeds (unlike `failing`, it outlives the backoff).
        var lastFailure: RedisError?
        var backoff: TimeAmount
        var nextID = 0
        var closed = false
        var idleSweep: RepeatedTask?
    }

    package let configuration: RedisConfiguration
    package let options: Options
    private let group: any EventLoopGroup
    private let state: Locked<State>

    package init(_ configuration: RedisConfiguration, options: Options = Options(), group: any EventLoopGroup) {
        self.configuration = configuration
        self.options = options
        self.group = group
        state = Locked(State(backoff: options.initialBackoff))
        if let idleTimeout = options.idleTimeout {
            // A connection is closed between idleTimeout and idleTimeout + interval after its last reply.
            let interval = TimeAmount.nanoseconds(max(10_000_000, idleTimeout.nanoseconds / 4))
            let sweep = group.next().scheduleRepeatedTask(initialDelay: interval, delay: interval) { [weak self] _ in
                self?.sweepIdle(after: idleTimeout)
            }
            state.withLock { $0.idleSweep = sweep }
        }
    }

    deinit {
        state.withLock { $0.idleSweep?.cancel() }
    }

    /// Open connections, for metrics and tests.
    package var connectionCount: Int { state.withLock { $0.slots.count } }

    /// Why the server cannot be reached now: the last connection attempt failed and none has succeeded since
    /// (connections already open may still serve). nil once one succeeds.
    package var problem: String? { state.withLock { $0.lastFailure?.description } }

    /// Sends one command on a shared connection; its reply, or `RedisError` (`.server` for an error reply). The
    /// future completes on the connection's event loop.
    ///
    /// With `preferring`, an open connection on that event loop is chosen when it has no more commands waiting than
    /// the least busy one plus `pipelineDepth` / 4: its reply then needs no hop between threads; and a connection
    /// opened for the command is opened on that loop.
    ///
    /// Commands sent with the same `orderedBy` key run in the order they were sent: while one of them is in flight,
    /// the next goes to the same connection (Redis runs a connection's commands in order), so callers that do not
    /// wait for each reply (a publisher's messages to one stream) keep their order across the pool.
    package func send(
        _ arguments: [RESPArgument], deadline: NIODeadline, preferring eventLoop: (any EventLoop)? = nil,
        orderedBy key: String? = nil
    ) -> EventLoopFuture<RESPValue> {
        switch choose(arguments, deadline: deadline, preferring: eventLoop, orderedBy: key, then: nil) {
        case .fail(let error):
            return (eventLoop ?? group.next()).makeFailedFuture(error)
        case .use(let connection, let slot):
            return send(arguments, deadline: deadline, key: key, on: connection, slot: slot)
        case .queue(let reply):
            guard case .promise(let promise) = reply else { preconditionFailure("a command queued without a promise") }
            return promise.futureResult
        }
    }

    /// `send` without an order key, its reply given to `then`: on the connection's event loop, or at once when the
    /// command fails before it is sent. The cheapest way to send (no future is made).
    package func send(
        _ arguments: [RESPArgument], deadline: NIODeadline, preferring eventLoop: (any EventLoop)? = nil,
        then: @escaping @Sendable (Result<RESPValue, any Error>) -> Void
    ) {
        switch choose(arguments, deadline: deadline, preferring: eventLoop, orderedBy: nil, then: then) {
        case .fail(let error): then(.failure(error))
        case .use(let connection, _): connection.send(counted: arguments, deadline: deadline, reply: .callback(then))
        case .queue: break
        }
    }

    private enum Choice {
        /// Send it on this connection (already counted on it).
        case use(RedisConnection, slot: Int)
        /// Queued until a connection is made.
        case queue(RedisCommandHandler.Reply)
        case fail(RedisError)
    }

    /// Chooses a command's connection (see `send`), opening another when all are busy.
    private func choose(
        _ arguments: [RESPArgument], deadline: NIODeadline, preferring eventLoop: (any EventLoop)?,
        orderedBy key: String?,
        then: (@Sendable (Result<RESPValue, any Error>) -> Void)?
    ) -> Choice {
        enum Next {
            case use(RedisConnection, slot: Int, connect: Bool)
            case queue(RedisCommandHandler.Reply, connect: Bool)
            case fail(RedisError)
        }
        let next = state.withLock { state -> Next in
            if state.closed { return .fail(.connectionClosed("the client is closed")) }
            if let key, let pinned = state.ordered[key],
                let index = state.slots.firstIndex(where: { $0.id == pinned.slot })
            {
                state.ordered[key]!.count += 1
                return .use(state.slots[index].counted(), slot: pinned.slot, connect: false)
            }
            // The least busy connection, and the least busy one on the caller's event loop.
            var best: (index: Int, waiting: Int)?
            var local: (index: Int, waiting: Int)?
            for index in state.slots.indices {
                let waiting = state.slots[index].connection.counters.inFlight
                if best == nil || waiting < best!.waiting { best = (index, waiting) }
                if let eventLoop, state.slots[index].eventLoop === eventLoop, local == nil || waiting < local!.waiting {
                    local = (index, waiting)
                }
            }
            if let chosen = best, let local, local.waiting <= chosen.waiting + options.pipelineDepth / 4 {
                best = local
            }
            // Busy: every open connection has a full pipeline; or none is on the caller's event loop (each loop
            // gets one, up to maxConnections, so that replies need no hop between threads).
            let busy = best.map { $0.waiting >= options.pipelineDepth || (eventLoop != nil && local == nil) } ?? true
            var connect = false
            if busy, state.slots.count + state.connecting < options.maxConnections, state.connecting == 0 {
                if let failing = state.failing, failing.until > .now() {
                    if best == nil { return .fail(failing.error) }
                } else {
                    state.connecting += 1
                    connect = true
                }
            }
            if let best {
                let slot = state.slots[best.index]
                if let key { state.ordered[key] = (slot.id, 1) }
                return .use(slot.counted(), slot: slot.id, connect: connect)
            }
            if !connect, state.connecting == 0 {
                return .fail(state.failing?.error ?? .connectionClosed("no connection to \(configuration.address)"))
            }
            guard state.queued.count < options.maxQueued else {
                return .fail(.connectionClosed("\(options.maxQueued) commands already wait for a connection"))
            }
            let reply: RedisCommandHandler.Reply =
                then.map { .callback($0) } ?? .promise(group.next().makePromise(of: RESPValue.self))
            state.queued.append(Queued(arguments: arguments, deadline: deadline, key: key, reply: reply))
            return .queue(reply, connect: connect)
        }
        switch next {
        case .fail(let error):
            return .fail(error)
        case .use(let connection, let slot, let connect):
            if connect { self.connect(on: eventLoop) }
            return .use(connection, slot: slot)
        case .queue(let reply, let connect):
            if connect { self.connect(on: eventLoop) }
            return .queue(reply)
        }
    }

    /// Sends a command already counted on `connection` (`Slot.counted`); an ordered one releases its key's pin on
    /// the connection once it completes.
    private func send(
        _ arguments: [RESPArgument], deadline: NIODeadline, key: String?, on connection: RedisConnection, slot: Int
    ) -> EventLoopFuture<RESPValue> {
        let future = connection.send(counted: arguments, deadline: deadline)
        if let key {
            future.whenComplete { _ in
                self.state.withLock { state in
                    if let pinned = state.ordered[key], pinned.slot == slot {
                        state.ordered[key] = pinned.count > 1 ? (pinned.slot, pinned.count - 1) : nil
                    }
                }
            }
        }
        return future
    }

    /// Opens one more connection; on success it serves the queued commands, on failure they fail and the client
    /// fails fast until the backoff has passed.
    private func connect(on eventLoop: (any EventLoop)?) {
        RedisConnection.connect(configuration, on: eventLoop ?? group.next()).whenComplete { result in
            switch result {
            case .success(let connection):
                let (slot, queued, closed) = self.state.withLock { state in
                    state.connecting -= 1
                    state.failing = nil
                    state.lastFailure = nil
                    state.backoff = self.options.initialBackoff
                    let slot = Slot(id: state.nextID, connection: connection, seen: (0, 0, .now()))
                    state.nextID += 1
                    if !state.closed { state.slots.append(slot) }
                    for command in state.queued {
                        _ = slot.counted()
                        guard let key = command.key else { continue }
                        state.ordered[key] = (slot.id, (state.ordered[key]?.count ?? 0) + 1)
                    }
                    defer { state.queued.removeAll() }
                    return (slot, state.queued, state.closed)
                }
                if closed {
                    _ = connection.close()
                    for command in queued {
                        command.reply.complete(.failure(RedisError.connectionClosed("the client is closed")))
                    }
                    return
                }
                connection.channel.closeFuture.whenComplete { _ in self.forget(slot.id) }
                for command in queued {
                    if case .promise(let promise) = command.reply {
                        self.send(
                            command.arguments, deadline: command.deadline, key: command.key, on: connection,
                            slot: slot.id
                        )
                        .cascade(to: promise)
                    } else {
                        connection.send(counted: command.arguments, deadline: command.deadline, reply: command.reply)
                    }
                }
            case .failure(let error):
                let reason = error as? RedisError ?? .connectionClosed("\(error)")
                let queued = self.state.withLock { state in
                    state.connecting -= 1
                    // Jitter of up to a quarter, so that the nodes' clients do not all come back at once.
                    let jitter = Int64.random(in: 0...max(1, state.backoff.nanoseconds / 4))
                    state.failing = (.now() + state.backoff + .nanoseconds(jitter), reason)
                    state.lastFailure = reason
                    state.backoff = min(state.backoff * 2, self.options.maxBackoff)
                    defer { state.queued.removeAll() }
                    return state.queued
                }
                for command in queued { command.reply.complete(.failure(reason)) }
            }
        }
    }

    /// Drops a connection that closed.
    private func forget(_ id: Int) {
        state.withLock { state in
            state.slots.removeAll { $0.id == id }
            state.ordered = state.ordered.filter { $0.value.slot != id }
        }
    }

    /// Closes the connections beyond the first on their event loop that have had no command in flight for
    /// `timeout`. Commands are counted when a connection is chosen, under the same lock, so a connection found idle
    /// here has none on the way; once it is dropped from the slots no command can choose it, and it is closed with
    /// nothing waiting on it.
    private func sweepIdle(after timeout: TimeAmount) {
        let now = NIODeadline.now()
        let idle = state.withLock { state -> [RedisConnection] in
            var idle: [Int] = []
            for index in state.slots.indices {
                let counters = state.slots[index].connection.counters
                let completed = counters.completed.load(ordering: .relaxed)
                let sent = counters.sent.load(ordering: .relaxed)
                let seen = state.slots[index].seen
                if sent != completed || sent != seen.sent || completed != seen.completed {
                    state.slots[index].seen = (sent, completed, now)
                } else if now - seen.since >= timeout {
                    idle.append(index)
                }
            }
            guard !idle.isEmpty else { return [] }
            // Keep one connection per event loop: a busy one when the loop has one, else the oldest.
            var closing: [Int] = []
            for index in idle {
                let loop = state.slots[index].eventLoop
                let kept = state.slots.indices.contains { other in
                    other != index && state.slots[other].eventLoop === loop && !closing.contains(other)
                        && (!idle.contains(other) || other < index)
                }
                if kept { closing.append(index) }
            }
            let connections = closing.map { state.slots[$0].connection }
            let ids = Set(closing.map { state.slots[$0].id })
            state.slots.removeAll { ids.contains($0.id) }
            state.ordered = state.ordered.filter { !ids.contains($0.value.slot) }
            return connections
        }
        for connection in idle { _ = connection.close() }
    }

    /// Closes every connection; commands waiting fail, later ones fail at once.
    package func close() -> EventLoopFuture<Void> {
        let (slots, queued) = state.withLock { state in
            state.closed = true
            state.idleSweep?.cancel()
            state.idleSweep = nil
            defer {
                state.slots.removeAll()
                state.queued.removeAll()
            }
            return (state.slots, state.queued)
        }
        for command in queued { command.reply.complete(.failure(RedisError.connectionClosed("the client is closed"))) }
        let eventLoop = group.next()
        return EventLoopFuture.andAllComplete(slots.map { $0.connection.close() }, on: eventLoop)
    }
}
