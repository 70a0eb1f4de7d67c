import Foundation
package import HangarComponents
package import Logging
package import NIOCore
import NIOSSL
package import PostgresNIO
import Synchronization
import HangarSync

/// One PostgreSQL server for one component, shared by every tenant and app on the node: postgres-nio's connections
/// in Hangar's pool (`PostgresPool`), wrapped so that an outage fails calls fast and ends by itself.
///
/// **The pool** follows postgres-nio's `_ConnectionPoolModule` design: one operation per connection at a time,
/// connections opened on demand up to the maximum and closed after the idle timeout, a FIFO queue while every
/// connection is busy. It is Hangar's own because that pool arms a timer per parked connection, whose memory a
/// cancelled `Task.sleep` holds until its deadline (see `PostgresPool`). **Configured:** maximum `maxConns` − 1
/// (`maxConns` defaults to 8, Hangar's default for the whole node, not pgx's max(4, NumCPU) per sidecar; the one left
/// over is the probe's, below, so the node never holds more than `maxConns`); idle timeout `connectionMaxIdleTime`
/// (default 5 min); no keep-alive query (the health check's `SELECT 1` each second goes through the pool);
/// `statement_timeout` = the component's `timeout`, sent at startup so that the server ends a query that runs too
/// long.
///
/// **Not taken:** its circuit breaker and its connection-retry backoff, which make a caller wait (up to 15 s, with
/// retries backing off to a minute) while the server is gone. Instead this type tracks the server itself:
/// - an operation that has not got a connection within `probeAfter` (150 ms) while the pool is not simply busy
///   (not every pooled connection leased, none finishing an operation meanwhile), or that fails with a connection
///   error, triggers a *probe* (one at a time: a fresh connection outside the pool, `SELECT 1`, closed; at most
///   `probeTimeout`, 2 s: a server that refuses or resets the connection fails it at once, and a busy machine may
///   take a second to authenticate); when the probe fails the backend is DOWN: the pool is shut down (which fails every
///   request waiting in its queue at once), the connections leased from it are closed (failing the queries on them)
///   and every call fails at once with `StateStoreError.unavailable`;
/// - a health check runs `SELECT 1` through the pool every `healthInterval` (1 s) while UP, with a probe when it has
///   no answer within `probeTimeout` (a server that hangs without closing its connections is found so, within
///   about 5 s),
///   and probes every `probeInterval` (250 ms) while DOWN; the first probe that succeeds starts a new pool: calls
///   succeed again well within 5 s of the server's return, with no restart.
///
/// Waiting is bounded: at most `maxWaiting` operations wait for a connection; more fail at once.
package final class PostgresBackend: Sendable, BackendHealthReporting {
    /// How the backend pools, waits and checks.
    package struct Options: Sendable {
        package var maxConnections = 8
        package var idleTimeout: Duration = .seconds(300)
        /// The component's `timeout`: the server's `statement_timeout`, and the connect timeout of pooled connections
        /// and of the migration lock's.
        package var timeout: Duration = .seconds(20)
        package var maxWaiting = 1024
        package var probeAfter: Duration = .milliseconds(150)
        package var probeTimeout: Duration = .seconds(2)
        package var probeInterval: Duration = .milliseconds(250)
        package var healthInterval: Duration = .seconds(1)

        package init() {}
    }

    /// One pool; a new one replaces it when the server returns after an outage.
    private struct Generation {
        let id: Int
        let pool: PostgresPool
    }

    private struct State {
        var current: Generation?
        /// Why the server is unreachable, nil while it answers.
        var problem: String?
        var nextGeneration = 0
        var waiting = 0
        var probing: EventLoopFuture<String?>?
        /// Connections leased now, closed when the backend goes DOWN.
        var leased: [Int: PostgresConnection] = [:]
        var nextLease = 0
        /// When an operation last finished on a pooled connection.
        var lastRelease: ContinuousClock.Instant?
        var closed = false
    }

    package let connectionString: PostgresConnectionString
    package let options: Options
    private let poolConfiguration: PostgresConnection.Configuration
    private let probeConfiguration: PostgresConnection.Configuration
    private let group: any EventLoopGroup
    /// The group's loops as task executors, made once (`future(on:_:)`).
    private let executors: [ObjectIdentifier: EventLoopTaskExecutor]
    private let logger: Logger
    private let state = Locked(State())
    /// Quiet: postgres-nio's background messages (connection attempts) would repeat what the backend reports.
    private static let quiet = Logger(label: "hangar.postgres.pool") { _ in SwiftLogNoOpLogHandler() }

    package init(
        _ connectionString: PostgresConnectionString, options: Options, group: any EventLoopGroup, logger: Logger
    ) throws {
        var executors: [ObjectIdentifier: EventLoopTaskExecutor] = [:]
        for loop in group.makeIterator() { executors[ObjectIdentifier(loop)] = EventLoopTaskExecutor(loop) }
        self.executors = executors
        self.connectionString = connectionString
        self.options = options
        self.group = group
        self.logger = logger
        var probe: PostgresConnection.Configuration
        let database = connectionString.database ?? connectionString.user
        if let socket = connectionString.unixSocketPath {
            probe = .init(
                unixSocketPath: socket, username: connectionString.user, password: connectionString.password,
                database: database)
        } else {
            probe = .init(
                host: connectionString.host, port: connectionString.port, username: connectionString.user,
                password: connectionString.password, database: database, tls: try Self.tls(connectionString))
        }
        var pooled = probe
        pooled.options.connectTimeout = (connectionString.connectTimeout ?? options.timeout).timeAmount
        pooled.options.additionalStartupParameters = [("statement_timeout", "\(options.timeout.milliseconds)")]
        probe.options.connectTimeout = options.probeTimeout.timeAmount
        poolConfiguration = pooled
        probeConfiguration = probe
        // The first pool exists from the start, so that operations can queue for it before `run()` begins.
        let first = makeGeneration()
        state.withLock { state in
            state.nextGeneration = first.id
            state.current = first
        }
    }

    private func makeGeneration() -> Generation {
        let pool = PostgresPool(
            configuration: poolConfiguration, maxConnections: Self.poolSize(options), group: group, logger: Self.quiet)
        let id = state.withLock { $0.nextGeneration + 1 }
        return Generation(id: id, pool: pool)
    }

    /// TLS as libpq's `sslmode` asks: `prefer`/`allow` use it when the server offers it and `require` insists, both
    /// without checking the certificate (as libpq); `verify-ca` checks the chain, `verify-full` the host name too.
    private static func tls(_ connectionString: PostgresConnectionString) throws -> PostgresConnection.Configuration.TLS {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch connectionString.sslMode {
        case .disable: return .disable
        case .allow, .prefer, .require: configuration.certificateVerification = .none
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        case .verifyFull: configuration.certificateVerification = .fullVerification
        }
        if let root = connectionString.sslRootCert { configuration.trustRoots = .file(root) }
        let context = try NIOSSLContext(configuration: configuration)
        switch connectionString.sslMode {
        case .allow, .prefer: return .prefer(context)
        default: return .require(context)
        }
    }

    package var backendProblem: String? { state.withLock { $0.problem } }

    /// Connections the pool may hold at most (for tests and metrics).
    package var maxConnections: Int { options.maxConnections }

    /// The pool's share of `maxConnections`: one less, so that a probe (at most one at a time) never takes the
    /// node above `maxConnections`; with `maxConns: 1`, 1 (a probe may then briefly make it 2).
    static func poolSize(_ options: Options) -> Int { max(1, options.maxConnections - 1) }

    // MARK: Operations

    /// `withConnection(body)` as a future on `eventLoop`, run by a task whose executor is that loop
    /// (`EventLoopTaskExecutor`): the caller's loop does the work between the awaits, and no other thread is woken
    /// but the connection's loop when it is another one.
    package func future<T: Sendable>(
        on eventLoop: any EventLoop, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) -> EventLoopFuture<T> {
        let promise = eventLoop.makePromise(of: T.self)
        let executor = executors[ObjectIdentifier(eventLoop)] ?? EventLoopTaskExecutor(eventLoop)
        // Not a stray: the task ends with the operation, which the promise reports.
        Task(executorPreference: executor) {
            do {
                promise.succeed(try await self.withConnection(body))
            } catch {
                promise.fail(error)
            }
        }
        return promise.futureResult
    }

    /// Runs `body` on a pooled connection. Fails with `.unavailable` at once while the server is unreachable, with
    /// `.closed` after `close`, and maps PostgreSQL's errors to `StateStoreError` without showing secrets.
    package func withConnection<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws(StateStoreError) -> T {
        let generation: Generation
        switch admit() {
        case .success(let admitted): generation = admitted
        case .failure(let error): throw error
        }
        let loop = MultiThreadedEventLoopGroup.currentEventLoop
        let connection: PostgresConnection
        do {
            if let idle = generation.pool.leaseIdle(preferring: loop) {
                connection = idle
            } else {
                connection = try await lease(from: generation, preferring: loop)
            }
        } catch {
            state.withLock { $0.waiting -= 1 }
            throw failure(error, generation)
        }
        let token = state.withLock { state -> Int? in
            state.waiting -= 1
            guard state.current?.id == generation.id else { return nil }
            state.nextLease += 1
            state.leased[state.nextLease] = connection
            return state.nextLease
        }
        guard let token else {
            generation.pool.release(connection, reusable: false)
            throw .unavailable("PostgreSQL is unreachable (pool replaced)")
        }
        do {
            let result = try await body(connection)
            released(token, answered: true)
            generation.pool.release(connection, reusable: true)
            return result
        } catch {
            // The server answered unless the connection failed; a connection that failed is not reused.
            let answered: Bool
            if case .unavailable = error as? StateStoreError {
                answered = false
            } else {
                answered = error is StateStoreError || (error as? PSQLError)?.code == .server
            }
            released(token, answered: answered)
            generation.pool.release(connection, reusable: answered)
            throw failure(error, generation)
        }
    }

    /// A connection when none is idle: a new one, or the next released. Not leased within `probeAfter` while the pool
    /// is not simply busy (not every pooled connection leased, none finishing an operation meanwhile): the server may
    /// be gone, and a probe tells. The timer is armed on the caller's loop, so that arming and cancelling it wakes no
    /// other thread, and only here: an operation that finds an idle connection arms none.
    private func lease(
        from generation: Generation, preferring loop: (any EventLoop)?
    ) async throws -> PostgresConnection {
        let leased = LeaseFlags()
        let watchdog = (loop ?? group.next()).scheduleTask(in: options.probeAfter.timeAmount) {
            guard !leased.leased.load(ordering: .relaxed) else { return }
            let busy = self.state.withLock { state in
                state.leased.count >= Self.poolSize(self.options)
                    || state.lastRelease.map { ContinuousClock.now - $0 < self.options.probeAfter } ?? false
            }
            if !busy { self.probeAndMark(generation.id) }
        }
        defer {
            leased.leased.store(true, ordering: .relaxed)
            watchdog.cancel()
        }
        return try await generation.pool.lease(preferring: loop)
    }

    /// `error` from an operation of `generation` as the caller sees it: PostgreSQL's errors mapped (`map`); a failed
    /// connection leads to a probe (DOWN when it fails too), and says why the server is unreachable when known.
    private func failure(_ error: any Error, _ generation: Generation) -> StateStoreError {
        if error is CancellationError { return .unavailable("cancelled while waiting for a PostgreSQL connection") }
        let mapped = Self.map(error)
        guard case .unavailable = mapped else { return mapped }
        if state.withLock({ $0.closed }) { return .closed }
        probeAndMark(generation.id)
        if let problem = backendProblem { return .unavailable("PostgreSQL is unreachable: \(problem)") }
        return mapped
    }

    private func released(_ token: Int, answered: Bool) {
        state.withLock { state in
            state.leased.removeValue(forKey: token)
            if answered { state.lastRelease = .now }
        }
    }

    /// Runs `body` on a connection of its own, outside the pool (the migration lock, which must be held while the
    /// migrations run on pooled connections), closed afterwards.
    package func withDedicatedConnection<T: Sendable>(
        _ body: @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        var configuration = probeConfiguration
        configuration.options.connectTimeout = options.timeout.timeAmount
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(
                on: group.next(), configuration: configuration, id: 0, logger: Self.quiet)
        } catch {
            throw Self.map(error)
        }
        do {
            let result = try await body(connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw Self.map(error)
        }
    }

    /// The current pool for one more operation, or why none may start.
    private func admit() -> Result<Generation, StateStoreError> {
        state.withLock { state in
            if state.closed { return .failure(.closed) }
            guard let current = state.current else {
                return .failure(.unavailable("PostgreSQL is unreachable: \(state.problem ?? "not connected yet")"))
            }
            guard state.waiting < options.maxWaiting else {
                return .failure(
                    .unavailable("\(options.maxWaiting) operations already wait for a PostgreSQL connection"))
            }
            state.waiting += 1
            return .success(current)
        }
    }

    /// PostgreSQL's and the pool's errors as store errors: connection-level failures are `.unavailable`, a server
    /// error is `.backend` with its SQLSTATE and message (which never hold the connection string).
    package static func map(_ error: any Error) -> StateStoreError {
        if let error = error as? StateStoreError { return error }
        if let error = error as? PSQLError {
            switch error.code {
            case .server:
                let sqlState = error.serverInfo?[.sqlState] ?? "?"
                let message = error.serverInfo?[.message] ?? "server error"
                // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now), 53300 (too many
                // connections): the server cannot serve now.
                if sqlState.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300"].contains(sqlState) {
                    return .unavailable("PostgreSQL: \(message) (SQLSTATE \(sqlState))")
                }
                return .backend("PostgreSQL: \(message) (SQLSTATE \(sqlState))")
            case .poolClosed:
                return .unavailable("PostgreSQL connection pool shut down")
            default:
                return .unavailable("PostgreSQL connection failed: \(describe(error))")
            }
        }
        return .unavailable("PostgreSQL connection failed: \(error)")
    }

    /// A PSQLError's code and underlying cause, which hold no secrets (its `description` hides everything).
    static func describe(_ error: PSQLError) -> String {
        if let serverInfo = error.serverInfo, let message = serverInfo[.message] {
            return "\(message) (SQLSTATE \(serverInfo[.sqlState] ?? "?"))"
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }

    // MARK: Probing

    /// Connects outside the pool and runs `SELECT 1`: nil when the server answers, else why not. One probe at a time;
    /// callers arriving meanwhile share it.
    package func probe() -> EventLoopFuture<String?> {
        let loop = group.next()
        let (future, promise) = state.withLock { state -> (EventLoopFuture<String?>, EventLoopPromise<String?>?) in
            if let probing = state.probing { return (probing, nil) }
            let promise = loop.makePromise(of: String?.self)
            state.probing = promise.futureResult
            return (promise.futureResult, promise)
        }
        guard let promise else { return future }
        let settled = LeaseFlags()
        let settle: @Sendable (String?) -> Void = { outcome in
            guard !settled.leased.exchange(true, ordering: .relaxed) else { return }
            self.state.withLock { $0.probing = nil }
            promise.succeed(outcome)
        }
        let timeout = options.probeTimeout
        let timer = loop.scheduleTask(in: timeout.timeAmount) {
            settle("no answer from \(self.connectionString.redacted) within \(timeout.milliseconds) ms")
        }
        let logger = Self.quiet
        PostgresConnection.connect(on: loop, configuration: probeConfiguration, id: 0, logger: logger)
            .flatMap { connection in
                connection.query("SELECT 1", logger: logger).map { _ in () }
                    .always { _ in let _: EventLoopFuture<Void> = connection.close() }
            }
            .whenComplete { result in
                timer.cancel()
                switch result {
                case .success: settle(nil)
                case .failure(let error):
                    let reason = (error as? PSQLError).map(Self.describe) ?? "\(error)"
                    settle("cannot connect to \(self.connectionString.redacted): \(reason)")
                }
            }
        return future
    }

    /// Probes on behalf of generation `id`; marks the backend DOWN (and shuts that pool down) when the probe fails.
    private func probeAndMark(_ id: Int) {
        probe().whenSuccess { problem in
            guard let problem else { return }
            self.markDown(id, problem)
        }
    }

    /// Takes generation `id` out of service: its pool shuts down (failing the requests waiting in its queue) and the
    /// connections leased from it are closed (failing the queries they run, which a server that hangs would
    /// otherwise keep waiting).
    private func markDown(_ id: Int, _ problem: String) {
        let taken = state.withLock { state -> (PostgresPool, [PostgresConnection])? in
            guard let current = state.current, current.id == id else { return nil }
            state.current = nil
            state.problem = problem
            let leased = Array(state.leased.values)
            state.leased = [:]
            return (current.pool, leased)
        }
        guard let (pool, leased) = taken else { return }
        logger.warning(
            "PostgreSQL unreachable; failing calls fast until it answers", metadata: ["reason": "\(problem)"])
        pool.shutDown()
        for connection in leased { let _: EventLoopFuture<Void> = connection.close() }
    }

    // MARK: Lifecycle

    /// The backend's background work: the health loop, which also closes the connections idle for longer than
    /// `idleTimeout`. Returns when the calling task is cancelled (by the store's `close`), after shutting the pool
    /// down.
    package func run() async {
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                if let current = state.withLock({ $0.current }) {
                    try? await Task.sleep(for: options.healthInterval)
                    if Task.isCancelled { break }
                    current.pool.closeIdle(olderThan: options.idleTimeout)
                    healthCheck(current, in: &group)
                } else {
                    let answers: Bool
                    do {
                        answers = try await probe().get() == nil
                    } catch {
                        answers = false
                    }
                    if Task.isCancelled { break }
                    if answers {
                        startPool()
                        logger.info("PostgreSQL answers again")
                    } else {
                        try? await Task.sleep(for: options.probeInterval)
                    }
                }
            }
            let taken = state.withLock { state -> (PostgresPool?, [PostgresConnection]) in
                state.closed = true
                defer {
                    state.current = nil
                    state.leased = [:]
                }
                return (state.current?.pool, Array(state.leased.values))
            }
            taken.0?.shutDown()
            for connection in taken.1 { let _: EventLoopFuture<Void> = connection.close() }
        }
    }

    /// Marks the backend closed: later operations fail with `.closed`.
    package func markClosed() {
        state.withLock { $0.closed = true }
    }

    /// Makes a new pool current (after an outage).
    private func startPool() {
        let generation = makeGeneration()
        let started = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.nextGeneration = generation.id
            state.current = generation
            state.problem = nil
            return true
        }
        if !started { generation.pool.shutDown() }
    }

    /// `SELECT 1` through the pool, as a child task so that the loop never waits on it; a failure, or no answer
    /// within `probeTimeout`, leads to a probe (and DOWN when that fails too).
    private func healthCheck(_ generation: Generation, in group: inout DiscardingTaskGroup) {
        let answered = LeaseFlags()
        let timer = self.group.next().scheduleTask(in: options.probeTimeout.timeAmount) {
            if !answered.leased.load(ordering: .relaxed) { self.probeAndMark(generation.id) }
        }
        group.addTask {
            _ = try? await self.withConnection { connection in
                try await connection.run("SELECT 1", logger: Self.quiet)
            }
            answered.leased.store(true, ordering: .relaxed)
            timer.cancel()
        }
    }
}

/// Flags shared between an operation and its timers.
private final class LeaseFlags: Sendable {
    let leased = Atomic<Bool>(false)
    let stoppedWaiting = Atomic<Bool>(false)
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// The same span as NIO's `TimeAmount`.
    var timeAmount: TimeAmount { .milliseconds(milliseconds) }
}
