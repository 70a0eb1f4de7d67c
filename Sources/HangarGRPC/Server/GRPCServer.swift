public import HangarRuntime
public import HangarTransport
public import Logging
public import NIOCore

/// The gRPC front-end's listeners: each accepted connection (an app's Unix socket or TCP) serves
/// `dapr.proto.runtime.v1.Dapr` through one `HTTP2ServerConnection` and its `GRPCConnectionHandler`.
public enum GRPCServer {
    package static func listeners(
        runtime: Runtime, timeouts: ConnectionTimeouts, group: any EventLoopGroup, logger: Logger
    ) -> ListenerBootstrap<ListenerIdentity> {
        listeners(
            service: DaprService.make(runtime: runtime), gate: runtime.gate, timeouts: timeouts, group: group,
            logger: logger)
    }

    /// The listeners of any method table (`@_spi(Benchmarks)`: the benchmark package's echo server).
    @_spi(Benchmarks) public static func listeners(service: GRPCService, gate: Gate, group: any EventLoopGroup, logger: Logger)
        -> ListenerBootstrap<ListenerIdentity>
    {
        listeners(service: service, gate: gate, timeouts: ConnectionTimeouts(), group: group, logger: logger)
    }

    static func listeners(
        service: GRPCService, gate: Gate, timeouts: ConnectionTimeouts, group: any EventLoopGroup,
        logger: Logger
    ) -> ListenerBootstrap<ListenerIdentity> {
        ListenerBootstrap(
            group: group, gatekeeper: AppConnectionGatekeeper.forListeners(registry: gate.registry, logger: logger)
        ) { channel, identity in
            try configure(channel, service: service, identity: identity, gate: gate, timeouts: timeouts, logger: logger)
        }
    }

    /// Makes `channel` a gRPC server connection for `identity`, answered by `service`: what each accepted connection
    /// gets (the fuzz targets drive it on an EmbeddedChannel).
    package static func configure(
        _ channel: any Channel, service: GRPCService, identity: ListenerIdentity, gate: Gate,
        timeouts: ConnectionTimeouts = ConnectionTimeouts(), logger: Logger
    ) throws {
        let handler = GRPCConnectionHandler(service: service, identity: identity, gate: gate, logger: logger)
        try channel.pipeline.syncOperations.addHandlers(handler.makeHandlers(settings: .init(timeouts)))
        handler.trackBuffers(on: channel)
    }
}
