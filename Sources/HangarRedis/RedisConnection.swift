package import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// One connection to a Redis server, set up and logged in, on which any number of commands may be in flight at
/// once (pipelining: each is written as it comes; replies come back in order). Commands that block the server side
/// of the connection (`XREADGROUP BLOCK`, `BLPOP`) and transactions belong on a connection of their own: a command
/// waits behind everything sent before it.
///
/// Set-up is one round trip where the server allows: `HELLO 3` with `AUTH` and `SETNAME`, which also switches the
/// connection to RESP3. A server without HELLO (before 6.0) or without RESP3 gets `AUTH` and `CLIENT SETNAME`
/// instead, in RESP2; `SELECT` follows when a database other than 0 is configured.
///
/// A command goes straight to the connection's `RedisCommandHandler` when sent from the connection's event loop (one
/// hop through `execute` otherwise), and its reply completes the one promise it returns: no future for the write,
/// no timer of its own (the handler keeps one deadline timer for the connection).
package final class RedisConnection: Sendable {
    package let channel: any Channel
    /// 3 after a successful `HELLO 3`, else 2.
    package let protocolVersion: Int
    /// The commands sent and completed, read by `RedisClient` from any thread.
    let counters: Counters
    private let eventLoop: any EventLoop
    private let handler: NIOLoopBound<RedisCommandHandler>

    /// Commands sent on a connection and commands completed (answered or failed): their difference is what is in
    /// flight; both unchanged over a while with no difference, the connection was idle all that while.
    final class Counters: Sendable {
        let sent = Atomic<Int>(0)
        let completed = Atomic<Int>(0)

        /// Commands sent and not completed yet.
        var inFlight: Int {
            let completed = completed.load(ordering: .relaxed)
            return max(0, sent.load(ordering: .relaxed) - completed)
        }
    }

    /// On the channel's event loop, once its pipeline holds the command handler.
    private init(channel: any Channel, protocolVersion: Int) throws {
        self.channel = channel
        self.protocolVersion = protocolVersion
        eventLoop = channel.eventLoop
        let handler = try channel.pipeline.syncOperations.handler(type: RedisCommandHandler.self)
        counters = handler.counters
        self.handler = NIOLoopBound(handler, eventLoop: channel.eventLoop)
    }

    /// Connects to `configuration.address` on `eventLoop` and logs in. Push frames (RESP3 pub/sub messages,
    /// client-side caching invalidations) go to `onPush`, on the event loop.
    package static func connect(
        _ configuration: RedisConfiguration, on eventLoop: any EventLoop,
        onPush: @escaping @Sendable (RESPValue) -> Void = { _ in }
    ) -> EventLoopFuture<RedisConnection> {
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(configuration.connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls = configuration.tls {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandlers([
                        ByteToMessageHandler(RESPDecoder(limits: configuration.limits)),
                        RedisCommandHandler(counters: Counters(), onPush: onPush),
                    ])
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch configuration.address {
        case .tcp(let host, let port):
            connected = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1).connect(host: host, port: port)
        case .unix(let path):
            connected = bootstrap.connect(unixDomainSocketPath: path)
        }
        let deadline = NIODeadline.now() + configuration.connectTimeout
        return connected.flatMapErrorThrowing { error in
            throw RedisError.connectionClosed("cannot connect to \(configuration.address): \(error)")
        }.flatMap { channel in
            handshake(channel, configuration, deadline: deadline).flatMapError { error in
                channel.close(promise: nil)
                return eventLoop.makeFailedFuture(error)
            }
        }
    }

    /// HELLO 3 (with AUTH and SETNAME), else the RESP2 commands; then SELECT.
    private static func handshake(
        _ channel: any Channel, _ configuration: RedisConfiguration, deadline: NIODeadline
    ) -> EventLoopFuture<RedisConnection> {
        var hello: [RESPArgument] = ["HELLO", "3"]
        if let password = configuration.password {
            hello += ["AUTH", .string(configuration.username ?? "default"), .string(password)]
        }
        if let name = configuration.clientName { hello += ["SETNAME", .string(name)] }
        let resp3: RedisConnection
        let resp2: RedisConnection
        do {
            resp3 = try RedisConnection(channel: channel, protocolVersion: 3)
            resp2 = try RedisConnection(channel: channel, protocolVersion: 2)
        } catch {
            return channel.eventLoop.makeFailedFuture(RedisError.connectionClosed("the connection closed at once"))
        }
        return resp3.send(hello, deadline: deadline).map { _ in resp3 }.flatMapError { error in
            // A server without HELLO says "unknown command"; one without RESP3 says NOPROTO. Anything else
            // (wrong password, no such user) is the answer.
            guard case RedisError.server(let message) = error,
                message.hasPrefix("NOPROTO") || message.lowercased().contains("unknown command")
            else { return channel.eventLoop.makeFailedFuture(Self.handshakeError(error)) }
            return resp2.loginRESP2(configuration, deadline: deadline).map { resp2 }
        }.flatMap { connection in
            guard configuration.database != 0 else { return channel.eventLoop.makeSucceededFuture(connection) }
            return connection.send(["SELECT", .integer(Int64(configuration.database))], deadline: deadline)
                .map { _ in connection }
                .flatMapErrorThrowing { throw Self.handshakeError($0) }
        }
    }

    /// AUTH and CLIENT SETNAME on a RESP2 connection.
    private func loginRESP2(_ configuration: RedisConfiguration, deadline: NIODeadline) -> EventLoopFuture<Void> {
        var steps: [[RESPArgument]] = []
        if let password = configuration.password {
            steps.append(
                configuration.username.map { ["AUTH", .string($0), .string(password)] } ?? ["AUTH", .string(password)])
        }
        if let name = configuration.clientName { steps.append(["CLIENT", "SETNAME", .string(name)]) }
        let futures = steps.map { send($0, deadline: deadline).map { _ in } }
        return EventLoopFuture.andAllSucceed(futures, on: channel.eventLoop).flatMapErrorThrowing {
            throw Self.handshakeError($0)
        }
    }

    private static func handshakeError(_ error: any Error) -> RedisError {
        switch error {
        case RedisError.server(let message): .handshake(message)
        case let error as RedisError: error
        default: .connectionClosed("\(error)")
        }
    }

    /// Sends one command; its reply, or `RedisError.server` for an error reply. A command without a reply by
    /// `deadline` closes the connection (`RedisError.deadlineExceeded` for it and every command behind it). The
    /// future completes on the connection's event loop.
    package func send(_ arguments: [RESPArgument], deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        counters.sent.add(1, ordering: .relaxed)
        return send(counted: arguments, deadline: deadline)
    }

    /// `send`, for a command the caller has already counted in `counters.sent` (`RedisClient` counts it while it
    /// chooses the connection, so that a connection chosen is never seen idle).
    func send(counted arguments: [RESPArgument], deadline: NIODeadline) -> EventLoopFuture<RESPValue> {
        let promise = eventLoop.makePromise(of: RESPValue.self)
        send(counted: arguments, deadline: deadline, reply: .promise(promise))
        return promise.futureResult
    }

    /// `send(counted:deadline:)`, its reply given to `reply` (a callback is called on the connection's event loop,
    /// or at once when the command fails before it is sent).
    func send(counted arguments: [RESPArgument], deadline: NIODeadline, reply: RedisCommandHandler.Reply) {
        // Past its deadline before it is sent: fail it alone (sent, it would close the connection for everyone).
        guard deadline > .now() else {
            counters.completed.add(1, ordering: .relaxed)
            return reply.complete(.failure(RedisError.deadlineExceeded))
        }
        var bytes = channel.allocator.buffer(capacity: RESPEncoder.estimatedSize(arguments))
        RESPEncoder.writeCommand(arguments, into: &bytes)
        let command = RedisCommandHandler.Command(bytes: bytes, reply: reply, deadline: deadline)
        if eventLoop.inEventLoop {
            handler.value.enqueue(command)
        } else {
            eventLoop.execute { self.handler.value.enqueue(command) }
        }
    }

    /// Whether the connection is still open.
    package var isActive: Bool { channel.isActive }

    /// Closes the connection; commands still waiting fail.
    package func close() -> EventLoopFuture<Void> {
        channel.close().recover { _ in }
    }
}
