import Foundation
package import HangarComponents
package import Logging
package import NIOCore
import Synchronization
import HangarSync

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
/// Byte accounting (`usageByPartition`, the tenant's `maxStateBytes` as each write's `byteLimit`) is kept in Redis by
/// the write script, atomically with each write, so every node sharing the server keeps the same totals (see
/// `writeScript`). Expired items count until they are taken out of the count: every `usageInterval`, by
/// `purgeExpired(on:)`, or, for the partition concerned, before a write is refused, so that a partition is never
/// refused because of items that have already expired. `usageByPartition` is what the last write or refresh
/// answered: the totals are read again every `usageInterval` (other nodes' writes show then).
///
/// Not here: the Query API (`queryIndexes` is refused), RedisJSON (`contentType: application/json` items are stored
/// as bytes like any other), and cluster or sentinel servers.
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
        /// How often expired items are taken out of the byte counts and the totals read again.
        package var usageInterval: TimeAmount

        package init(
            configuration: RedisConfiguration, options: RedisClient.Options = .init(),
            commandTimeout: TimeAmount = .seconds(3), defaultTTL: Duration? = nil, keyLayout: StateKeyLayout = .hangar,
            healthCheckInterval: TimeAmount = .seconds(1), usageInterval: TimeAmount = .seconds(30)
        ) {
            self.configuration = configuration
            self.options = options
            self.commandTimeout = commandTimeout
            self.defaultTTL = defaultTTL
            self.keyLayout = keyLayout
            self.healthCheckInterval = healthCheckInterval
            self.usageInterval = usageInterval
        }
    }

    /// ETags, transactions and TTLs.
    package let features: StateFeatures = [.etag, .transactional, .ttl]
    /// False: replies come later, from the server.
    package var executesInline: Bool { false }
    /// Bytes per partition as the last write or refresh answered (see the type's notes); partitions holding nothing
    /// are left out.
    package var usageByPartition: [String: Int] {
        usage.withLock { $0.compactMapValues { $0.bytes > 0 ? $0.bytes : nil } }
    }

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
    private let usageCount: Script
    private let healthCheck: Locked<RepeatedTask?> = Locked(nil)
    private let usageRefresh: Locked<RepeatedTask?> = Locked(nil)
    /// Each partition's bytes as Redis last answered, with the count of changes that answer reflects (`writes`):
    /// replies on several connections arrive in any order, and an older one must not replace a newer one.
    private let usage: Locked<[String: (bytes: Int, writes: Int64)]> = Locked([:])
    /// Why the last health check failed; nil once one succeeds.
    private let pingProblem: Locked<String?> = Locked(nil)

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
            usageCount = try Script(Self.usageScript, client: client, deadline: deadline)
        } catch {
            _ = try? client.close().wait()
            throw error
        }
        let task = group.next().scheduleRepeatedTask(
            initialDelay: settings.healthCheckInterval, delay: settings.healthCheckInterval
        ) { [weak self] _ in self?.checkHealth() }
        healthCheck.withLock { $0 = task }
        // The totals as they stand (other nodes', an earlier run's), so that usage is reported before any write.
        _ = try? refreshUsage(purging: false, on: group.next()).wait()
        let loop = group.next()
        let refresh = loop.scheduleRepeatedAsyncTask(
            initialDelay: settings.usageInterval, delay: settings.usageInterval
        ) { [weak self] _ in
            guard let self else { return loop.makeSucceededVoidFuture() }
            return self.refreshUsage(purging: true, on: loop).map { _ in }.recover { _ in }
        }
        usageRefresh.withLock { $0 = refresh }
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
        var arguments: [RESPArgument] = [.integer(Int64(operations.count))]
        keys.reserveCapacity(operations.count + 4)
        arguments.reserveCapacity(operations.count * 8 + 2)
        // The partitions the operations touch, in order of first use.
        var partitions: [String] = []
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
            let name = StatePartition.of(key)
            let partition = partitions.firstIndex(of: name) ?? partitions.count
            if partition == partitions.count { partitions.append(name) }
            var limit: RESPArgument = ""
            if case .set(let request) = operation, let byteLimit = request.byteLimit {
                limit = .integer(Int64(byteLimit))
            }
            let accounting: [RESPArgument] = [
                .integer(Int64(partition + 1)), .integer(Int64(key.utf8.count)), limit,
            ]
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
                ] + accounting
            case .delete:
                arguments += ["d", .string(given), mode, "", ""] + accounting
            }
        }
        for partition in partitions {
            keys += AccountingKeys(partition).arguments
            arguments.append(.string(partition))
        }
        keys.append(.string(AccountingKeys.partitionSet))
        let written = partitions  // fixed from here on: read by the reply's callbacks
        let reply = evaluate(write, keys: keys, arguments: arguments, on: eventLoop)
        return .later(
            reply.flatMapThrowing { reply in
                guard let elements = reply.elements, elements.count == operations.count + written.count else {
                    throw StateStoreError.backend("Redis answered a write with \(reply)")
                }
                // -1: the write left that partition's total as it was.
                self.record(
                    zip(written, elements.suffix(written.count)).compactMap { partition, total in
                        Self.total(total).map { (partition, $0) }
                    }, replacing: false)
            }.flatMapErrorThrowing { error in
                if case .server(let message) = error as? RedisError, message.hasPrefix(Self.byteLimitPrefix) {
                    // `HANGAR_BYTE_LIMIT <operation> <usage>`
                    let fields = message.split(separator: " ").dropFirst().compactMap { Int($0) }
                    let index = max(0, min(operations.count - 1, (fields.first ?? 1) - 1))
                    guard case .set(let request) = operations[index], let limit = request.byteLimit else {
                        throw StateStoreError.backend("Redis refused a write without a byte limit: \(message)")
                    }
                    throw StateStoreError.byteLimitExceeded(
                        partition: StatePartition.of(request.key), usage: fields.dropFirst().first ?? 0, limit: limit)
                }
                throw Self.storeError(error, keys: operations.map(\.key))
            })
    }

    // MARK: Byte accounting

    /// The keys that hold one partition's byte accounting. None contains `||`, which every key the runtime
    /// stores does (`<namespace>||<app>||<key>`, or Dapr's `<app>||<key>`), so they never meet a state item.
    /// They count per Redis database: components on the same database share them.
    struct AccountingKeys {
        /// The set of partitions that hold bytes (what `refreshUsage` reads).
        static let partitionSet = "hangar:state:partitions"
        /// A hash: `bytes`, the partition's total, and `writes`, how many times it changed.
        let total: String
        /// Its items with a TTL, scored by their expiry (milliseconds of the server's clock).
        let expiries: String
        /// The counted size of each of those items.
        let sizes: String

        init(_ partition: String) {
            total = "hangar:state:bytes:" + partition
            expiries = "hangar:state:expiries:" + partition
            sizes = "hangar:state:sizes:" + partition
        }

        var arguments: [RESPArgument] { [.string(total), .string(expiries), .string(sizes)] }
    }

    /// A partition's `{bytes, writes}` as the scripts answer it; nil for anything else (-1: unchanged).
    static func total(_ reply: RESPValue) -> (bytes: Int, writes: Int64)? {
        guard let fields = reply.elements, fields.count == 2, let bytes = fields[0].integer,
            let writes = fields[1].integer
        else { return nil }
        return (Int(bytes), writes)
    }

    /// Keeps the totals a write or refresh answered, unless a later one is known already; `replacing` (a refresh
    /// of every partition) also forgets partitions it did not list.
    private func record(_ totals: [(String, (bytes: Int, writes: Int64))], replacing: Bool) {
        usage.withLock { usage in
            if replacing {
                let listed = Set(totals.map(\.0))
                usage = usage.filter { listed.contains($0.key) }
            }
            for (partition, total) in totals where total.writes >= usage[partition]?.writes ?? .min {
                usage[partition] = total
            }
        }
    }

    /// Takes every expired item out of the byte counts now; returns how many there were.
    package func purgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        if closed.load(ordering: .relaxed) { return eventLoop.makeFailedFuture(StateStoreError.closed) }
        return refreshUsage(purging: true, on: eventLoop)
    }

    /// Reads every partition's total from Redis (replacing what is known) and, when `purging`, first takes the
    /// expired items out of them, in rounds of at most 1,000 items per partition; returns how many it took out.
    private func refreshUsage(purging: Bool, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let batch = 1000
        let members = client.send(["SMEMBERS", .string(AccountingKeys.partitionSet)], deadline: .now() + settings.commandTimeout)
        return members.hop(to: eventLoop).flatMap { reply in
            let partitions = (reply.elements ?? []).compactMap(\.string)
            guard !partitions.isEmpty else {
                self.record([], replacing: true)
                return eventLoop.makeSucceededFuture(0)
            }
            let keys = partitions.flatMap { AccountingKeys($0).arguments } + [.string(AccountingKeys.partitionSet)]
            let arguments: [RESPArgument] =
                [purging ? "1" : "0", .integer(Int64(batch))] + partitions.map { .string($0) }
            return self.evaluate(self.usageCount, keys: keys, arguments: arguments, on: eventLoop).flatMap { reply in
                guard let parts = reply.elements, parts.count == 2, let removed = parts[0].integer,
                    let totals = parts[1].elements, totals.count == partitions.count
                else {
                    return eventLoop.makeFailedFuture(StateStoreError.backend("Redis answered a usage count with \(reply)"))
                }
                self.record(
                    zip(partitions, totals).compactMap { partition, total in Self.total(total).map { (partition, $0) } },
                    replacing: true)
                // A partition with more than a round's worth expired: go on.
                if purging, removed >= batch {
                    return self.refreshUsage(purging: true, on: eventLoop).map { Int(removed) + $0 }
                }
                return eventLoop.makeSucceededFuture(Int(removed))
            }
        }
    }

    // MARK: Lifecycle

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return eventLoop.makeSucceededVoidFuture() }
        healthCheck.withLock { task in
            task?.cancel()
            task = nil
        }
        usageRefresh.withLock { task in
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
