import Logging
public import NIOCore
import NIOPosix

/// Binds listeners for one front-end: a Unix socket, a TCP address, or a listening TCP socket inherited from the
/// service manager. Each listener has an `Identity` that the front-end gives meaning to (for Hangar's front-ends,
/// the runtime's `ListenerIdentity`: an app's own socket, or TCP); `gatekeeper` may put a `ConnectionGatekeeper`
/// in front of the connections of an identity (an app's socket checks its peer's credentials), and `configure`
/// then adds the front-end's handlers to each accepted connection.
///
/// The transport knows nothing of tenants or protocols: that is the runtime's and the front-ends' business.
public struct ListenerBootstrap<Identity: Sendable>: Sendable {
    public typealias Configure = @Sendable (_ channel: any Channel, _ identity: Identity) throws -> Void
    public typealias Gatekeeping = @Sendable (_ identity: Identity) -> (any ConnectionGatekeeper)?

    let group: any EventLoopGroup
    let gatekeeper: Gatekeeping
    let configure: Configure

    package init(
        group: any EventLoopGroup, gatekeeper: @escaping Gatekeeping = { _ in nil }, configure: @escaping Configure
    ) {
        self.group = group
        self.gatekeeper = gatekeeper
        self.configure = configure
    }

    /// Listens on a Unix socket (an existing socket file at `path` is replaced).
    public func bind(unixSocket path: String, identity: Identity) async throws -> Listener {
        let listener = Listener(address: "unix:\(path)")
        let channel = try await bootstrap(identity, listener.tracker)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        listener.attach(channel)
        return listener
    }

    /// Listens on TCP, with `TCP_NODELAY` on every connection.
    package func bind(host: String, port: Int, identity: Identity) async throws -> Listener {
        let listener = Listener(address: "\(host):\(port)")
        let channel = try await bootstrap(identity, listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port).get()
        listener.attach(channel)
        return listener
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation).
    package func adopt(socket descriptor: CInt, address: String, identity: Identity) async throws -> Listener {
        let listener = Listener(address: address)
        let channel = try await bootstrap(identity, listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .withBoundSocket(descriptor).get()
        listener.attach(channel)
        return listener
    }

    private func bootstrap(_ identity: Identity, _ tracker: ConnectionSet) -> ServerBootstrap {
        let gatekeeper = gatekeeper(identity)
        let configure = configure
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                tracker.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    if let gatekeeper {
                        try channel.pipeline.syncOperations.addHandler(ConnectionGateHandler(gatekeeper: gatekeeper))
                    }
                    try configure(channel, identity)
                }
            }
    }
}
