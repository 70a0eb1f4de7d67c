public import HangarRuntime
public import Logging
public import NIOCore
import NIOHTTP2
import NIOPosix

/// Binds gRPC listeners: an app's Unix socket or a TCP address, each serving `dapr.proto.runtime.v1.Dapr`.
public struct GRPCServer: Sendable {
    let service: GRPCService
    let gate: Gate
    let group: any EventLoopGroup
    let logger: Logger

    public init(runtime: Runtime, group: any EventLoopGroup, logger: Logger) {
        self.init(service: DaprService.make(runtime: runtime), gate: runtime.gate, group: group, logger: logger)
    }

    package init(service: GRPCService, gate: Gate, group: any EventLoopGroup, logger: Logger) {
        self.service = service
        self.gate = gate
        self.group = group
        self.logger = logger
    }

    /// Listens on an app's Unix socket; every connection is that app. Peer credentials are checked when the app
    /// lists uids or gids, and connections count towards its `maxConnections`.
    public func bind(unixSocket path: String, app: AppID) async throws -> GRPCListener {
        let listener = GRPCListener(address: "unix:\(path)")
        let channel = try await bootstrap(identity: .app(app), app: app, tracker: listener.tracker)
            .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        listener.attach(channel)
        return listener
    }

    /// Listens on TCP; every call is identified by its `dapr-api-token`.
    public func bind(host: String, port: Int) async throws -> GRPCListener {
        let listener = GRPCListener(address: "\(host):\(port)")
        let channel = try await bootstrap(identity: .tcp, app: nil, tracker: listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: host, port: port).get()
        listener.attach(channel)
        return listener
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation); like
    /// `bind(host:port:)`, every call is identified by its `dapr-api-token`.
    public func adopt(socket descriptor: CInt, address: String) async throws -> GRPCListener {
        let listener = GRPCListener(address: address)
        let channel = try await bootstrap(identity: .tcp, app: nil, tracker: listener.tracker)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .withBoundSocket(descriptor).get()
        listener.attach(channel)
        return listener
    }

    private func bootstrap(
        identity: ListenerIdentity, app: AppID?, tracker: ConnectionSet
    ) -> ServerBootstrap {
        let service = self.service
        let gate = self.gate
        let logger = self.logger
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                tracker.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let app {
                        try sync.addHandler(AppSocketHandler(app: app, registry: gate.registry, logger: logger))
                    }
                    try sync.addHandler(NIOHTTP2Handler(mode: .server, initialSettings: GRPCConnectionHandler.settings))
                    try sync.addHandler(
                        GRPCConnectionHandler(service: service, identity: identity, gate: gate, logger: logger))
                }
            }
    }
}
