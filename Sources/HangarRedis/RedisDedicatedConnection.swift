package import NIOCore
import HangarSync

/// A connection of its own for one user that holds it with blocking commands (`XREADGROUP ... BLOCK`), which
/// must not share a pipelined connection (every command behind a blocked one would wait for it). Made when first
/// needed and again after it closes; while the server cannot be reached, commands fail at once until a backoff
/// has passed (100 ms doubling to 2 s, with jitter), as `RedisClient` does.
///
/// Each command carries its own deadline: a blocking command's is its block time plus a margin, so the normal
/// per-command deadline never cuts it. The server's id for the connection (`CLIENT ID`, read once connected) lets
/// another connection end a blocked command early with `CLIENT UNBLOCK`.
package final class RedisDedicatedConnection: Sendable {
    private struct State {
        var connection: RedisConnection?
        var clientID: Int64?
        var connecting: EventLoopFuture<RedisConnection>?
        var failing: (until: NIODeadline, error: RedisError)?
        var backoff: TimeAmount
        var closed = false
    }

    package let configuration: RedisConfiguration
    private let eventLoop: any EventLoop
    private let options: RedisClient.Options
    private let state: Locked<State>

    package init(
        _ configuration: RedisConfiguration, options: RedisClient.Options = .init(), on eventLoop: any EventLoop
    ) {
        self.configuration = configuration
        self.options = options
        self.eventLoop = eventLoop
        state = Locked(State(backoff: options.initialBackoff))
    }

    /// The server's id of the open connection (for `CLIENT UNBLOCK`); nil while there is none.
    package var clientID: Int64? { state.withLock { $0.connection?.isActive == true ? $0.clientID : nil } }

    /// How long until the next connection attempt is allowed (zero when one may be made now).
    package var retryDelay: TimeAmount {
        state.withLock { state in
            guard let failing = state.failing else { return .zero }
            return max(.zero, failing.until - .now())
        }
    }

    /// Sends one command on this connection, connecting first when needed; fails at once while in backoff.
    package func send(_ arguments: [RESPArgument], deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        connection().flatMap { $0.send(arguments, deadline: deadline) }
    }

    private func connection() -> EventLoopFuture<RedisConnection> {
        enum Next {
            case ready(RedisConnection)
            case wait(EventLoopFuture<RedisConnection>)
            case fail(RedisError)
            case connect(EventLoopPromise<RedisConnection>)
        }
        let next = state.withLock { state -> Next in
            if state.closed { return .fail(.connectionClosed("the connection is closed")) }
            if let connection = state.connection, connection.isActive { return .ready(connection) }
            state.connection = nil
            if let connecting = state.connecting { return .wait(connecting) }
            if let failing = state.failing, failing.until > .now() { return .fail(failing.error) }
            let promise = eventLoop.makePromise(of: RedisConnection.self)
            state.connecting = promise.futureResult
            return .connect(promise)
        }
        switch next {
        case .ready(let connection): return eventLoop.makeSucceededFuture(connection)
        case .wait(let future): return future
        case .fail(let error): return eventLoop.makeFailedFuture(error)
        case .connect(let promise):
            let deadline = NIODeadline.now() + configuration.connectTimeout
            RedisConnection.connect(configuration, on: eventLoop).flatMap { connection in
                connection.send(["CLIENT", "ID"], deadline: deadline).map { reply -> (RedisConnection, Int64?) in
                    if case .integer(let id) = reply { return (connection, id) }
                    return (connection, nil)
                }.flatMapError { error in
                    // CLIENT ID is renamed or refused (an ACL): the connection still serves, it cannot be unblocked.
                    if case RedisError.server = error {
                        return connection.channel.eventLoop.makeSucceededFuture((connection, nil))
                    }
                    _ = connection.close()
                    return connection.channel.eventLoop.makeFailedFuture(error)
                }
            }.whenComplete { result in
                switch result {
                case .success(let (connection, id)):
                    let closed = self.state.withLock { state in
                        state.connecting = nil
                        state.failing = nil
                        state.backoff = self.options.initialBackoff
                        if !state.closed {
                            state.connection = connection
                            state.clientID = id
                        }
                        return state.closed
                    }
                    if closed {
                        _ = connection.close()
                        promise.fail(RedisError.connectionClosed("the connection is closed"))
                    } else {
                        promise.succeed(connection)
                    }
                case .failure(let error):
                    let reason = error as? RedisError ?? .connectionClosed("\(error)")
                    self.state.withLock { state in
                        state.connecting = nil
                        let jitter = Int64.random(in: 0...max(1, state.backoff.nanoseconds / 4))
                        state.failing = (.now() + state.backoff + .nanoseconds(jitter), reason)
                        state.backoff = min(state.backoff * 2, self.options.maxBackoff)
                    }
                    promise.fail(reason)
                }
            }
            return promise.futureResult
        }
    }

    /// Closes the connection; a command waiting on it fails, later ones fail at once.
    package func close() -> EventLoopFuture<Void> {
        let connection = state.withLock { state in
            state.closed = true
            defer { state.connection = nil }
            return state.connection
        }
        return connection?.close() ?? eventLoop.makeSucceededVoidFuture()
    }
}
