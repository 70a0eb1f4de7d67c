public import HummingbirdCore
public import Logging
public import NIOCore
import NIOExtras
import NIOPosix
public import ServiceLifecycle

/// An HTTP server on a listening socket the process inherited (systemd socket activation), which Hummingbird's
/// own `Server` cannot adopt: the same child-channel set-up and request handling, accepted from the given
/// descriptor. On graceful shutdown it stops accepting and, as Hummingbird's server does, tells every open
/// connection to quiesce (NIOExtras' `ServerQuiescingHelper`): idle keep-alive connections close at once, busy ones
/// after the request in flight.
public struct InheritedSocketServer<ChildChannel: ServerChildChannel>: Service {
    let descriptor: CInt
    let childChannel: ChildChannel
    let group: any EventLoopGroup
    let logger: Logger
    let onRunning: (@Sendable (any Channel) async -> Void)?

    public init(
        descriptor: CInt, childChannel: ChildChannel, group: any EventLoopGroup, logger: Logger,
        onRunning: (@Sendable (any Channel) async -> Void)? = nil
    ) {
        self.descriptor = descriptor
        self.childChannel = childChannel
        self.group = group
        self.logger = logger
        self.onRunning = onRunning
    }

    public func run() async throws {
        let childChannel = self.childChannel
        let logger = self.logger
        let quiescing = ServerQuiescingHelper(group: group)
        let server = try await ServerBootstrap(group: group)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(descriptor) { channel in childChannel.setup(channel: channel, logger: logger) }
        await onRunning?(server.channel)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await childChannel.handle(value: connection, logger: logger) }
                    }
                }
            }
        } onGracefulShutdown: {
            // Closes the listening channel (ending the accept loop) and quiesces every connection.
            quiescing.initiateShutdown(promise: nil)
        }
    }
}
