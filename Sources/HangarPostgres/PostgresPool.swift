import Foundation
import HangarComponents
import Logging
import NIOCore
import PostgresNIO
import HangarSync

/// The connections of one `PostgresBackend` generation: at most `maxConnections` postgres-nio `PostgresConnection`s,
/// each leased to one operation at a time (PostgreSQL runs one query at a time per connection).
///
/// Why not postgres-nio's `PostgresClient` (its `_ConnectionPoolModule` pool): that pool arms a timer — a child
/// task sleeping for the idle timeout — every time a connection is parked, and cancels it when the connection is
/// leased again. On Linux a cancelled `Task.sleep` keeps its wake-up job, and the memory that holds, until the
/// deadline: with the default 5 min idle timeout, one caller's steady GetStates grew hangard by 0.7 KB per call, about
/// 1 GB at 5,000 calls/s before the first timers expired (BENCHMARKS.md). This pool keeps what its design gives
/// Hangar (connections opened on demand up to the maximum, a FIFO queue of waiters, idle connections closed after the
/// idle timeout) with no timer per operation: leasing and parking are a lock and an array, and idle connections are
/// closed by `closeIdle`, which the backend's health loop calls once a second.
///
/// Also: a caller is given, when one is idle, a connection on its own event loop, so that the query's I/O wakes no
/// other thread; a connection is opened on the caller's loop. The backend bounds how many wait
/// (`Options.maxWaiting`), probes the server when a lease is slow and shuts the pool down when the server is gone.
final class PostgresPool: Sendable {
    private struct Idle {
        let connection: PostgresConnection
        let since: ContinuousClock.Instant
    }

    private struct Waiter {
        let id: Int
        let continuation: CheckedContinuation<PostgresConnection, any Error>
    }

    private struct State {
        /// Parked connections, the most recently parked last (taken first, so that the others idle out).
        var idle: [Idle] = []
        /// Connections open or being opened (leased, idle and connecting).
        var open = 0
        var waiters = CircularBuffer<Waiter>()
        var nextWaiter = 0
        var nextConnection = 0
        var shutDown = false
    }

    private let configuration: PostgresConnection.Configuration
    private let maxConnections: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Locked(State())

    init(
        configuration: PostgresConnection.Configuration, maxConnections: Int, group: any EventLoopGroup,
        logger: Logger
    ) {
        self.configuration = configuration
        self.maxConnections = maxConnections
        self.group = group
        self.logger = logger
    }

    /// Why a lease failed because the pool was shut down (the server went away, or the store closed).
    static let shutDownError = StateStoreError.unavailable("PostgreSQL connection pool shut down")

    /// Connections open or being opened now (for tests).
    var openCount: Int { state.withLock { $0.open } }

    /// An idle connection, preferring one on `loop`, when there is one: no waiting, no allocation.
    func leaseIdle(preferring loop: (any EventLoop)?) -> PostgresConnection? {
        state.withLock { state -> PostgresConnection? in
            guard !state.shutDown, !state.idle.isEmpty else { return nil }
            if let loop, let index = state.idle.lastIndex(where: { $0.connection.eventLoop === loop }) {
                return state.idle.remove(at: index).connection
            }
            return state.idle.removeLast().connection
        }
    }

    /// A connection: an idle one, a new one while fewer than `maxConnections` are open (opened on `loop`), or the
    /// next one released when all are busy (first come, first served). Fails when the pool is shut down meanwhile,
    /// when the connection cannot be opened, or with `CancellationError` when the calling task is cancelled.
    func lease(preferring loop: (any EventLoop)?) async throws -> PostgresConnection {
        if let connection = leaseIdle(preferring: loop) { return connection }
        enum Next { case connect(Int), wait(Int) }
        let next = try state.withLock { state throws -> Next in
            guard !state.shutDown else { throw Self.shutDownError }
            guard state.open >= maxConnections else {
                state.open += 1
                state.nextConnection += 1
                return .connect(state.nextConnection)
            }
            state.nextWaiter += 1
            return .wait(state.nextWaiter)
        }
        switch next {
        case .connect(let id):
            return try await connect(id: id, on: loop ?? group.next()).get()
        case .wait(let id):
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    enqueue(Waiter(id: id, continuation: continuation))
                }
            } onCancel: {
                let waiter = state.withLock { state -> Waiter? in
                    guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                    return state.waiters.remove(at: index)
                }
                waiter?.continuation.resume(throwing: CancellationError())
            }
        }
    }

    /// Queues `waiter`, unless a connection came free or the pool shut down since the caller looked.
    private func enqueue(_ waiter: Waiter) {
        enum Outcome { case queued, leased(PostgresConnection), connect(Int), shutDown }
        let outcome = state.withLock { state -> Outcome in
            if state.shutDown { return .shutDown }
            if !state.idle.isEmpty { return .leased(state.idle.removeLast().connection) }
            if state.open < maxConnections {
                state.open += 1
                state.nextConnection += 1
                return .connect(state.nextConnection)
            }
            state.waiters.append(waiter)
            return .queued
        }
        switch outcome {
        case .queued: break
        case .leased(let connection): waiter.continuation.resume(returning: connection)
        case .connect(let id): serve(waiter, byConnecting: id)
        case .shutDown: waiter.continuation.resume(throwing: Self.shutDownError)
        }
    }

    /// Opens connection `id` (already counted in `open`) and hands it to `waiter`.
    private func serve(_ waiter: Waiter, byConnecting id: Int) {
        connect(id: id, on: group.next()).whenComplete { result in
            waiter.continuation.resume(with: result)
        }
    }

    /// Opens connection `id`, already counted in `open`; the count drops when it closes or fails to open.
    private func connect(id: Int, on loop: any EventLoop) -> EventLoopFuture<PostgresConnection> {
        PostgresConnection.connect(on: loop, configuration: configuration, id: id, logger: logger)
            .flatMapErrorThrowing { error in
                self.closed()
                throw error
            }
            .flatMapThrowing { connection in
                connection.closeFuture.whenComplete { _ in self.closed(connection) }
                if self.state.withLock({ $0.shutDown }) {
                    let _: EventLoopFuture<Void> = connection.close()
                    throw Self.shutDownError
                }
                return connection
            }
    }

    /// A connection closed, or failed to open: it no longer counts, and a waiter gets a new one if any waits.
    private func closed(_ connection: PostgresConnection? = nil) {
        let waiter = state.withLock { state -> (Waiter, Int)? in
            state.open -= 1
            if let connection, let index = state.idle.firstIndex(where: { $0.connection === connection }) {
                state.idle.remove(at: index)
            }
            guard !state.shutDown, state.open < maxConnections, let waiter = state.waiters.popFirst() else {
                return nil
            }
            state.open += 1
            state.nextConnection += 1
            return (waiter, state.nextConnection)
        }
        if let (waiter, id) = waiter { serve(waiter, byConnecting: id) }
    }

    /// Gives `connection` back: to the first waiter, else parked. `reusable` false (its operation failed without an
    /// answer from the server, so the connection's state is unknown) closes it instead.
    func release(_ connection: PostgresConnection, reusable: Bool) {
        guard reusable, !connection.isClosed else {
            let _: EventLoopFuture<Void> = connection.close()
            return
        }
        enum Outcome { case parked, handed(Waiter), close }
        let outcome = state.withLock { state -> Outcome in
            if state.shutDown { return .close }
            if let waiter = state.waiters.popFirst() { return .handed(waiter) }
            state.idle.append(Idle(connection: connection, since: .now))
            return .parked
        }
        switch outcome {
        case .parked: break
        case .handed(let waiter): waiter.continuation.resume(returning: connection)
        case .close: let _: EventLoopFuture<Void> = connection.close()
        }
    }

    /// Closes the connections parked for longer than `idleTimeout`.
    func closeIdle(olderThan idleTimeout: Duration) {
        let now = ContinuousClock.now
        let expired = state.withLock { state -> [PostgresConnection] in
            guard state.idle.contains(where: { now - $0.since >= idleTimeout }) else { return [] }
            let expired = state.idle.filter { now - $0.since >= idleTimeout }.map(\.connection)
            state.idle.removeAll { now - $0.since >= idleTimeout }
            return expired
        }
        for connection in expired { let _: EventLoopFuture<Void> = connection.close() }
    }

    /// Stops the pool: waiters fail at once, idle connections close, and connections released or opened later are
    /// closed. Leased connections are the caller's to close.
    func shutDown() {
        let (waiters, idle) = state.withLock { state -> (CircularBuffer<Waiter>, [Idle]) in
            state.shutDown = true
            defer {
                state.waiters.removeAll()
                state.idle.removeAll()
            }
            return (state.waiters, state.idle)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: Self.shutDownError) }
        for parked in idle { let _: EventLoopFuture<Void> = parked.connection.close() }
    }
}
