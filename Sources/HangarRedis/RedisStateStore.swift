import Foundation
package import HangarComponents
package import Logging
package import NIOCore
import Synchronization

/// `state.redis`: a state store on a Redis server, in Dapr's layout (a hash per item with `data` and `version`; see
/// `writeScript`), shared by every tenant of the node through one `RedisClient`: at most `poolSize` pipelined
/// connections for the whole node, whatever the number of apps.
///
/// A read is one `EVALSHA` of `readScript` (the hash and its TTL; a key of another type falls back to `GET`, as
/// Dapr's does, for values written as plain strings); every write, a whole transaction included, is one `EVALSHA` of
/// `writeScript`, so it is atomic on the server and costs one round trip. A bulk read sends its keys at once,
/// pipelined.
///
/// Outages fail fast: while the server cannot be reached each call fails at once with `.unavailable` (the client's
/// backoff), the store reports the reason as its `backendProblem` (the component goes DOWN), and a health check
/// (`PING` every second) notices a server that went away while nothing was asked of it. Calls succeed again as soon
/// as a connection can be made, within the client's longest backoff (2 s) of the server's return.
///
/// Not here: byte accounting (`maxStateBytes` is not enforced on Redis: the server's `maxmemory` is the bound;
/// `usageByPartition` is empty), the Query API (`queryIndexes` is refused), RedisJSON (`contentType:
/// application/json` items are stored as bytes like any other), and cluster or sentinel servers.
package final class RedisStateStore: TransactionalStateStore, BackendHealthReporting {
    /// How the store reaches its server and forms its keys: what `state.redis`'s metadata gives.
    package struct Settings: Sendable {
        package var configuration: RedisConfiguration
        package var options: RedisClient.Options
        /// Each command's deadline (Dapr's `readTimeout`, 3 s by default).
        package var commandTimeout: TimeAmount
        /// The TTL of a save that gives none (the component's `ttlInSeconds`); nil: such saves never expire.
        package var defaultTTL: Duration?
        package var keyLayout: StateKeyLayout
        /// How often the server is pinged to notice an outage while no call is made.
        package var healthCheckInterval: TimeAmount

        package init(
            configuration: RedisConfiguration, options: RedisClient.Options = .init(),
            commandTimeout: TimeAmount = .seconds(3), defaultTTL: Duration? = nil, keyLayout: StateKeyLayout = .hangar,
            healthCheckInterval: TimeAmount = .seconds(1)
        ) {
            self.configuration = configuration
            self.options = options
            self.commandTimeout = commandTimeout
            self.defaultTTL = defaultTTL
            self.keyLayout = keyLayout
            self.healthCheckInterval = healthCheckInterval
        }
    }

    /// ETags, transactions and TTLs.
    package let features: StateFeatures = [.etag, .transactional, .ttl]
    /// False: replies come later, from the server.
    package var executesInline: Bool { false }
    /// Not counted on Redis (see the type's notes).
    package var usageByPartition: [String: Int] { [:] }

    package let settings: Settings
    /// The node's connections to the server, for this component.
    package let client: RedisClient
    private let logger: Logger
    private let closed = Atomic<Bool>(false)
    /// A Lua script and its SHA-1, as `SCRIPT LOAD` answered when the store opened.
    private struct Script: Sendable {
        let body: String
        let sha: String

        /// Loads `body` into the server's script cache and waits for its SHA-1.
        init(_ body: String, client: RedisClient, deadline: NIODeadline) throws {
            let loaded = try client.send(["SCRIPT", "LOAD", .string(body)], deadline: deadline).wait()
            guard let sha = loaded.string else {
                throw RedisError.server("SCRIPT LOAD answered \(loaded) rather than the script's SHA-1")
            }
            self.body = body
            self.sha = sha
        }
    }

    private let read: Script
    private let write: Script
    private let healthCheck: Mutex<RepeatedTask?> = Mutex(nil)
    /// Why the last health check failed; nil once one succeeds.
    private let pingProblem: Mutex<String?> = Mutex(nil)

    /// Connects, checks that the server answers and loads the write script; fails when the server cannot be
    /// reached or refuses the login. Blocks the calling thread until then (the component host opens stores on the
    /// thread pool).
    package init(settings: Settings, group: any EventLoopGroup, logger: Logger) throws {
        self.settings = settings
        self.logger = logger
        let client = RedisClient(settings.configuration, options: settings.options, group: group)
        self.client = client
        let deadline = NIODeadline.now() + settings.configuration.connectTimeout + settings.commandTimeout
        do {
            read = try Script(Self.readScript, client: client, deadline: deadline)
            write = try Script(Self.writeScript, client: client, deadline: deadline)
        } catch {
            _ = try? client.close().wait()
            throw error
        }
        let task = group.next().scheduleRepeatedTask(
            initialDelay: settings.healthCheckInterval, delay: settings.healthCheckInterval
        ) { [weak self] _ in self?.checkHealth() }
        healthCheck.withLock { $0 = task }
    }

    /// Why the server cannot be used now: a failed connection attempt or health check; nil when it answers.
    package var backendProblem: String? {
        if closed.load(ordering: .relaxed) { return nil }
        return client.problem ?? pingProblem.withLock { $0 }
    }

    /// The client's open connections.
    package var backendConnections: Int? { client.connectionCount }

    // MARK: Reads

    package func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
        if closed.load(ordering: .relaxed) { return .failure(StateStoreError.closed) }
        let sent = Date()
        // One promise, completed from the reply's callback: no chain of futures on the way.
        let promise = eventLoop.makePromise(of: StateEntry?.self)
        evaluate(read, keys: [.string(settings.keyLayout.backendKey(key))], on: eventLoop) { reply in
            do {
                promise.succeed(try Self.entry(fromRead: reply.get(), key: key, sent: sent))
            } catch {
                promise.fail(Self.storeError(error, keys: [key]))
            }
        }
        return .later(promise.futureResult)
    }

    package func bulkGet(
        _ keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[Result<StateEntry?, StateStoreError>]> {
        // Every HGETALL is sent before any reply is read: the client pipelines them on its connections.
        let reads = keys.map { key -> EventLoopFuture<Result<StateEntry?, StateStoreError>> in
            get(key, on: eventLoop).future(on: eventLoop).map { .success($0) }.recover {
                .failure(StateStoreError.from($0))
            }
        }
        return .later(EventLoopFuture.whenAllSucceed(reads, on: eventLoop))
    }

    /// An item from the read script's reply (`readScript`); nil when the key does not exist. Its expiry is
    /// counted from when the read was sent, so that it is never later than the server's.
    static func entry(fromRead reply: RESPValue, key: String, sent: Date) throws -> StateEntry? {
        guard let parts = reply.elements, parts.count == 3, case .integer(let kind) = parts[0] else {
            throw StateStoreError.backend("Redis answered a read with \(reply)")
        }
        let expiresAt: Date? =
            if case .integer(let milliseconds) = parts[2], milliseconds > 0 {
                sent.addingTimeInterval(Double(milliseconds) / 1000)
            } else {
                nil
            }
        if kind == 0 {
            // A plain string value (Dapr's fallback): no ETag.
            guard let bytes = parts[1].bytes else { return nil }
            return StateEntry(value: Data(bytes.readableBytesView), etag: "", expiresAt: expiresAt)
        }
        guard let elements = parts[1].elements else {
            throw StateStoreError.backend("Redis answered a read with \(reply)")
        }
        if elements.isEmpty { return nil }
        var data: ByteBuffer?
        var version: String?
        var index = 0
        while index + 1 < elements.count {
            switch elements[index].string {
            case "data": data = elements[index + 1].bytes
            case "version": version = elements[index + 1].string
            default: break
            }
            index += 2
        }
        guard let data, let version else {
            throw StateStoreError.backend(
                "the Redis hash for key \(key) lacks its 'data' or 'version' field (it was not written as state)")
        }
        return StateEntry(value: Data(data.readableBytesView), etag: version, expiresAt: expiresAt)
    }

    // MARK: Writes

    package func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        write([.set(request)], on: eventLoop)
    }

    package func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        write([.delete(request)], on: eventLoop)
    }

    package func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        if operations.isEmpty { return .success(()) }
        return write(operations, on: eventLoop)
    }

    /// Runs the write script for `operations`: all applied, or none and the first failure.
    private func write(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        if closed.load(ordering: .relaxed) { return .failure(StateStoreError.closed) }
        var keys: [RESPArgument] = []
        var arguments: [RESPArgument] = []
        keys.reserveCapacity(operations.count)
        arguments.reserveCapacity(operations.count * 5)
        for operation in operations {
            let (key, etag, concurrency) =
                switch operation {
                case .set(let request): (request.key, request.etag, request.concurrency)
                case .delete(let request): (request.key, request.etag, request.concurrency)
                }
            let given = etag ?? ""
            // Dapr's ETags here are integers (`strconv.Atoi`); anything else could never match.
            if !given.isEmpty, concurrency != .lastWrite, Int64(given) == nil {
                return .failure(StateStoreError.invalidETag(key: key, etag: given))
            }
            keys.append(.string(settings.keyLayout.backendKey(key)))
            let mode: RESPArgument =
                switch concurrency {
                case .unspecified: "u"
                case .firstWrite: "f"
                case .lastWrite: "l"
                }
            switch operation {
            case .set(let request):
                let ttl = request.ttl ?? settings.defaultTTL
                let milliseconds = ttl.map {
                    max(1, $0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000)
                }
                arguments += [
                    "s", .string(given), mode, .string(milliseconds.map(String.init) ?? ""),
                    .bytes(ByteBuffer(bytes: request.value)),
                ]
            case .delete:
                arguments += ["d", .string(given), mode, "", ""]
            }
        }
        let reply = evaluate(write, keys: keys, arguments: arguments, on: eventLoop)
        let physicalKeys = operations.map(\.key)
        return .later(
            reply.map { _ in () }.flatMapErrorThrowing { error in throw Self.storeError(error, keys: physicalKeys) })
    }

    // MARK: Lifecycle

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return eventLoop.makeSucceededVoidFuture() }
        healthCheck.withLock { task in
            task?.cancel()
            task = nil
        }
        return client.close().hop(to: eventLoop)
    }

    // MARK: Plumbing

    /// Runs a script by its SHA-1 (`EVALSHA`); should the server have forgotten it (a restart, `SCRIPT FLUSH`),
    /// sends it whole (`EVAL`), which caches it again.
    private func evaluate(
        _ script: Script, keys: [RESPArgument], arguments: [RESPArgument] = [], on eventLoop: any EventLoop
    ) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        evaluate(script, keys: keys, arguments: arguments, on: eventLoop) { promise.completeWith($0) }
        return promise.futureResult
    }

    /// `evaluate`, its reply given to `then` (on the connection's event loop, or at once when it fails before it
    /// is sent), with the store's deadline, on a connection of the caller's event loop where one is open.
    private func evaluate(
        _ script: Script, keys: [RESPArgument], arguments: [RESPArgument] = [], on eventLoop: any EventLoop,
        then: @escaping @Sendable (Result<RESPValue, any Error>) -> Void
    ) {
        var command: [RESPArgument] = []
        command.reserveCapacity(3 + keys.count + arguments.count)
        command.append("EVALSHA")
        command.append(.string(script.sha))
        command.append(.integer(Int64(keys.count)))
        command += keys
        command += arguments
        client.send(command, deadline: .now() + settings.commandTimeout, preferring: eventLoop) { [command] result in
            guard case .failure(RedisError.server(let message)) = result, message.hasPrefix("NOSCRIPT") else {
                return then(result)
            }
            var whole = command
            whole[0] = "EVAL"
            whole[1] = .string(script.body)
            self.client.send(whole, deadline: .now() + self.settings.commandTimeout, preferring: eventLoop, then: then)
        }
    }

    /// Pings the server; a failure is the store's `backendProblem` until a ping succeeds.
    private func checkHealth() {
        guard !closed.load(ordering: .relaxed) else { return }
        let timeout = min(settings.commandTimeout, .seconds(1))
        client.send(["PING"], deadline: .now() + timeout).whenComplete { result in
            switch result {
            case .success: self.pingProblem.withLock { $0 = nil }
            case .failure(let error):
                let problem = "\(error)"
                let first = self.pingProblem.withLock { previous in
                    defer { previous = problem }
                    return previous == nil
                }
                if first { self.logger.warning("Redis health check failed", metadata: ["error": "\(problem)"]) }
            }
        }
    }

    /// A client error as the store reports it: an ETag check the script refused as `etagMismatch` of that
    /// operation's key; other error replies as `backend`; a server that cannot be reached or did not answer in
    /// time as `unavailable`.
    static func storeError(_ error: any Error, keys: [String]) -> StateStoreError {
        if let error = error as? StateStoreError { return error }
        guard let error = error as? RedisError else { return .backend("\(error)") }
        switch error {
        case .server(let message):
            if message.hasPrefix(mismatchPrefix) {
                let index = message.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 1
                return .etagMismatch(key: keys[max(0, min(keys.count - 1, index - 1))])
            }
            return .backend(error.description)
        case .connectionClosed, .deadlineExceeded, .handshake:
            return .unavailable(error.description)
        }
    }
}
