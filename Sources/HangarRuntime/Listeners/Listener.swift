public import Logging
public import NIOCore
import NIOPosix
import Synchronization

/// Asks a connection to finish: take no new requests, close once those in flight have been answered. Each
/// front-end's connection handler acts on it (gRPC sends GOAWAY; HTTP/1.1 closes after the current response).
public struct ListenerDrainEvent: Sendable {
    public init() {}
}

/// One bound listener (an app's socket or a TCP address) and the connections it accepted, so that it can be
/// drained: stop accepting, let calls in flight finish (bounded), then close. Front-end neutral: the gRPC and the
/// HTTP servers both bind through `ListenerBootstrap` and hand back one of these.
public final class Listener: Sendable {
    public let address: String
    private let connections = ConnectionSet()
    private let serverChannel = Mutex<(any Channel)?>(nil)

    init(address: String) {
        self.address = address
    }

    var tracker: ConnectionSet { connections }

    func attach(_ channel: any Channel) {
        serverChannel.withLock { $0 = channel }
    }

    /// The address the listener is bound to (for a TCP port 0, the port chosen).
    public var localAddress: SocketAddress? { serverChannel.withLock { $0?.localAddress } }

    /// How many connections are open.
    public var connectionCount: Int { connections.count }

    /// Stops accepting, asks every connection to finish its calls, and closes what is still open after `timeout`.
    public func drain(timeout: Duration) async {
        if let channel = serverChannel.withLock({ $0 }) { try? await channel.close() }
        let open = connections.all
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent()) }
        let deadline = ContinuousClock.now + timeout
        while connections.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for channel in connections.all { try? await channel.close() }
    }
}

/// The open connections of a listener.
final class ConnectionSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLock { $0.count } }
    var all: [any Channel] { channels.withLock { Array($0.values) } }

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }
}

/// Binds listeners for one front-end: an app's Unix socket (every connection is that app; peer credentials are
/// checked and connections counted by `AppSocketHandler`), a TCP address, or a listening TCP socket inherited
/// from the service manager. `configure` adds the front-end's handlers to each accepted connection.
public struct ListenerBootstrap: Sendable {
    public typealias Configure = @Sendable (_ channel: any Channel, _ identity: ListenerIdentity) throws -> Void

    let group: any EventLoopGroup
    let registry: TenantRegistry
    let logger: Logger
    let configure: Configure

    public init(group: any EventLoopGroup, registry: TenantRegistry, logger: Logger, configure: @escaping Configure) {
        self.group = group
        self.registry = registry
        self.logger = logger
        self.configure = configure
    }

    /// Listens on an app's Unix socket.
    public func bind(unixSocket path: String, app: AppID) async throws -> Listener {
        let listener = Listener(address: "unix:\(path)")
        let channel = try await bootstrap(.app(app), listener.tracker)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        listener.attach(channel)
        return listener
    }

    /// Listens on TCP; every call is identified by its `dapr-api-token`.
    public func bind(host: String, port: Int) async throws -> Listener {
        let listener = Listener(address: "\(host):\(port)")
        let channel = try await bootstrap(.tcp, listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port).get()
        listener.attach(channel)
        return listener
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation).
    public func adopt(socket descriptor: CInt, address: String) async throws -> Listener {
        let listener = Listener(address: address)
        let channel = try await bootstrap(.tcp, listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .withBoundSocket(descriptor).get()
        listener.attach(channel)
        return listener
    }

    private func bootstrap(_ identity: ListenerIdentity, _ tracker: ConnectionSet) -> ServerBootstrap {
        let registry = registry
        let logger = logger
        let configure = configure
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                tracker.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    if case .app(let app) = identity {
                        try channel.pipeline.syncOperations.addHandler(
                            AppSocketHandler(app: app, registry: registry, logger: logger))
                    }
                    try configure(channel, identity)
                }
            }
    }
}
