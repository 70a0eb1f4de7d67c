public import HangarRuntime
import HummingbirdCore
public import Hummingbird
public import Logging
public import NIOCore
public import ServiceLifecycle

/// Builds Hummingbird HTTP/1.1 servers for the listeners of the node, all sharing one router.
public struct HTTPServer: Sendable {
    let responder: RouterResponder<HangarRequestContext>
    let group: any EventLoopGroup
    let registry: TenantRegistry
    let logger: Logger

    public init(runtime: Runtime, group: any EventLoopGroup, logger: Logger) {
        self.responder = DaprHTTPRoutes(runtime: runtime).router().buildResponder()
        self.group = group
        self.registry = runtime.registry
        // Hummingbird logs every listener it starts at info; with two sockets per app that drowns the node's own
        // start-up summary, so its servers log from notice up.
        var serverLogger = logger
        if serverLogger.logLevel < .notice { serverLogger.logLevel = .notice }
        self.logger = serverLogger
    }

    /// A server for one listener, as a `Service`: bound to `address`, or on `inheritedSocket` (a listening
    /// descriptor from socket activation) when given. `onRunning` is called once it accepts connections.
    public func makeServer(
        address: BindAddress, inheritedSocket: CInt? = nil, listener: ListenerIdentity,
        onRunning: (@Sendable (any Channel) async -> Void)? = nil
    ) throws -> any Service {
        let responder = ListenerResponder(listener: listener, inner: self.responder)
        let logger = self.logger
        var configuration = HTTP1Channel.Configuration()
        if case .app(let app) = listener {
            let registry = self.registry
            configuration = HTTP1Channel.Configuration(additionalChannelHandlers: [
                AppSocketHandler(app: app, registry: registry, logger: logger)
            ])
        }
        let respond: HTTPChannelHandler.Responder = { request, responseWriter, channel in
            let context = HangarRequestContext(source: .init(channel: channel, logger: logger))
            let response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch {
                response = DaprErrorMiddleware.response(RequestError.internal("\(error)"))
            }
            try await responseWriter.write(response: response.head, body: response.body)
        }
        if let inheritedSocket {
            return InheritedSocketServer(
                descriptor: inheritedSocket, childChannel: HTTP1Channel(responder: respond, configuration: configuration),
                group: group, logger: logger, onRunning: onRunning)
        }
        return try HTTPServerBuilder.http1(configuration: configuration).buildServer(
            configuration: ServerConfiguration(address: address, serverName: nil),
            eventLoopGroup: group, logger: logger, responder: respond, onServerRunning: onRunning)
    }
}
