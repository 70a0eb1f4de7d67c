#if canImport(Glibc)
    import Glibc
#endif
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
        let descriptor = try ListeningSocket.make(try SocketAddress(unixDomainSocketPath: path))
        return try await serve(descriptor, address: "unix:\(path)", tcp: false, identity: identity)
    }

    /// Listens on TCP, with `TCP_NODELAY` on every connection.
    package func bind(host: String, port: Int, identity: Identity) async throws -> Listener {
        let descriptor = try ListeningSocket.make(try SocketAddress.makeAddressResolvingHost(host, port: port))
        return try await serve(descriptor, address: "\(host):\(port)", tcp: true, identity: identity)
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation) or from the
    /// process hangard took over from. The listener owns `descriptor` from here on, also when this throws.
    package func adopt(socket descriptor: CInt, address: String, identity: Identity) async throws -> Listener {
        try await serve(descriptor, address: address, tcp: true, identity: identity)
    }

    /// Serves on a listening Unix socket inherited from the process hangard took over from; its file stays where it
    /// is. The listener owns `descriptor` from here on, also when this throws.
    package func adopt(unixSocket descriptor: CInt, path: String, identity: Identity) async throws -> Listener {
        try await serve(descriptor, address: "unix:\(path)", tcp: false, identity: identity)
    }

    /// Hands a listening socket to NIO and keeps a copy of its descriptor in the listener.
    private func serve(_ descriptor: CInt, address: String, tcp: Bool, identity: Identity) async throws -> Listener {
        let copy: CInt
        do {
            copy = try ListeningSocket.duplicate(descriptor)
        } catch {
            close(descriptor)
            throw error
        }
        let listener = Listener(address: address, descriptor: copy)
        var server = bootstrap(identity, listener.tracker)
        if tcp { server = server.childChannelOption(.tcpOption(.tcp_nodelay), value: 1) }
        let channel = try await server.withBoundSocket(descriptor).get()
        listener.attach(channel)
        return listener
    }

    /// Reads of one connection (each at most 64 KiB, NIO's adaptive allocator) before its event loop turns to the
    /// next ready connection. One: an event loop serves many tenants' connections, and a client that streams
    /// megabytes (an upload, or an attacker filling its buffer share) must not make every other connection on the
    /// loop wait for all of it. Small calls lose nothing: one read holds every request the client had sent.
    static var readsPerWakeup: UInt { 1 }

    private func bootstrap(_ identity: Identity, _ tracker: ConnectionSet) -> ServerBootstrap {
        let gatekeeper = gatekeeper(identity)
        let configure = configure
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: Self.readsPerWakeup)
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
