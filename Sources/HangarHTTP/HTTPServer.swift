package import HangarRuntime
package import HangarTransport
package import Logging
package import NIOCore
import NIOHTTP1

/// The HTTP/1.1 front-end's listeners: each accepted connection (an app's Unix socket or TCP) serves Dapr's HTTP
/// API through NIOHTTP1's codec and one `HTTPConnectionHandler` with the Dapr routes.
package enum HTTPServer {
    package static func listeners(
        runtime: Runtime, timeouts: ConnectionTimeouts = ConnectionTimeouts(), group: any EventLoopGroup, logger: Logger
    ) -> ListenerBootstrap<ListenerIdentity> {
        ListenerBootstrap(
            group: group, gatekeeper: AppConnectionGatekeeper.forListeners(registry: runtime.registry, logger: logger)
        ) { channel, identity in
            try configure(channel, runtime: runtime, listener: identity, timeouts: timeouts)
        }
    }

    /// Makes `channel` a connection of `listener` serving Dapr's HTTP API from `runtime` (what each accepted
    /// connection gets; the fuzz targets drive it on an EmbeddedChannel).
    package static func configure(
        _ channel: any Channel, runtime: Runtime, listener: ListenerIdentity,
        timeouts: ConnectionTimeouts = ConnectionTimeouts()
    ) throws {
        try configure(channel, responder: DaprHTTPResponder(runtime: runtime, listener: listener), timeouts: timeouts)
    }

    /// Makes `channel` an HTTP/1.1 server connection answered by `responder`: NIOHTTP1's encoder and decoder, then
    /// `HTTPConnectionHandler`, which answers malformed requests with 400 and pipelined ones in order.
    package static func configure(
        _ channel: any Channel, responder: some HTTPResponder, timeouts: ConnectionTimeouts = ConnectionTimeouts()
    ) throws {
        let sync = channel.pipeline.syncOperations
        // NIOHTTP1's outbound header validator is off (about 5 % of a call): every response header is a constant or
        // built by the runtime, except item metadata, which `DaprHTTPResponder` checks before it becomes a header.
        try sync.configureHTTPServerPipeline(
            withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false)
        try sync.addHandler(HTTPConnectionHandler(responder: responder, timeouts: timeouts))
    }
}
