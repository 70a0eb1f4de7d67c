public import HangarRuntime
public import Logging
public import NIOCore
import NIOHTTP2

/// Binds gRPC listeners: an app's Unix socket or a TCP address, each serving `dapr.proto.runtime.v1.Dapr`.
public struct GRPCServer: Sendable {
    let listeners: ListenerBootstrap

    public init(runtime: Runtime, group: any EventLoopGroup, logger: Logger) {
        self.init(service: DaprService.make(runtime: runtime), gate: runtime.gate, group: group, logger: logger)
    }

    package init(service: GRPCService, gate: Gate, group: any EventLoopGroup, logger: Logger) {
        listeners = ListenerBootstrap(group: group, registry: gate.registry, logger: logger) { channel, identity in
            let sync = channel.pipeline.syncOperations
            // NIOHTTP2's header-block and content-length validation are off: they cost about 5 % of a call, and
            // GRPCConnectionHandler reads only :method, :path, content-type, grpc-encoding, grpc-timeout and
            // dapr-api-token, checks each, and percent-encodes whatever it quotes back in grpc-message.
            try sync.addHandler(
                NIOHTTP2Handler(
                    mode: .server, initialSettings: GRPCConnectionHandler.settings,
                    headerBlockValidation: .disabled, contentLengthValidation: .disabled))
            try sync.addHandler(GRPCConnectionHandler(service: service, identity: identity, gate: gate, logger: logger))
        }
    }

    /// Listens on an app's Unix socket; every connection is that app. Peer credentials are checked when the app
    /// lists uids or gids, and connections count towards its `maxConnections`.
    public func bind(unixSocket path: String, app: AppID) async throws -> Listener {
        try await listeners.bind(unixSocket: path, app: app)
    }

    /// Listens on TCP; every call is identified by its `dapr-api-token`.
    public func bind(host: String, port: Int) async throws -> Listener {
        try await listeners.bind(host: host, port: port)
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation); like
    /// `bind(host:port:)`, every call is identified by its `dapr-api-token`.
    public func adopt(socket descriptor: CInt, address: String) async throws -> Listener {
        try await listeners.adopt(socket: descriptor, address: address)
    }
}
