public import HangarRuntime
public import Logging
public import NIOCore
import NIOHTTP1

/// Binds HTTP/1.1 listeners serving Dapr's HTTP API: an app's Unix socket or a TCP address. Each connection is
/// NIOHTTP1's decoder, encoder and pipelining handler, then `HTTPConnectionHandler` with the Dapr routes.
public struct HTTPServer: Sendable {
    let listeners: ListenerBootstrap

    public init(runtime: Runtime, group: any EventLoopGroup, logger: Logger) {
        listeners = ListenerBootstrap(group: group, registry: runtime.registry, logger: logger) { channel, identity in
            try Self.configure(channel, responder: DaprHTTPResponder(runtime: runtime, listener: identity))
        }
    }

    /// Listens on an app's Unix socket; every connection is that app.
    public func bind(unixSocket path: String, app: AppID) async throws -> Listener {
        try await listeners.bind(unixSocket: path, app: app)
    }

    /// Listens on TCP; every call is identified by its `dapr-api-token`.
    public func bind(host: String, port: Int) async throws -> Listener {
        try await listeners.bind(host: host, port: port)
    }

    /// Serves on a listening TCP socket inherited from the service manager (socket activation).
    public func adopt(socket descriptor: CInt, address: String) async throws -> Listener {
        try await listeners.adopt(socket: descriptor, address: address)
    }

    /// Makes `channel` an HTTP/1.1 server connection answered by `responder`: NIOHTTP1's encoder and decoder, then
    /// `HTTPConnectionHandler`, which answers malformed requests with 400 and pipelined ones in order.
    public static func configure(_ channel: any Channel, responder: some HTTPResponder) throws {
        let sync = channel.pipeline.syncOperations
        try sync.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
        try sync.addHandler(HTTPConnectionHandler(responder: responder))
    }
}
