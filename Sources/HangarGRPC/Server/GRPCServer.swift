public import HangarRuntime
public import Logging
public import NIOCore
import NIOHTTP2

/// The gRPC front-end's listeners: each accepted connection (an app's Unix socket or TCP) serves
/// `dapr.proto.runtime.v1.Dapr` through `NIOHTTP2Handler` and one `GRPCConnectionHandler`.
public enum GRPCServer {
    public static func listeners(runtime: Runtime, group: any EventLoopGroup, logger: Logger) -> ListenerBootstrap {
        listeners(service: DaprService.make(runtime: runtime), gate: runtime.gate, group: group, logger: logger)
    }

    package static func listeners(service: GRPCService, gate: Gate, group: any EventLoopGroup, logger: Logger)
        -> ListenerBootstrap
    {
        ListenerBootstrap(group: group, registry: gate.registry, logger: logger) { channel, identity in
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
}
