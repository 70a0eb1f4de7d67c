import NIOCore
import NIOPosix

/// One HTTP/1.1 keep-alive connection to an app's HTTP socket, carrying one call at a time.
struct HTTPClientConnection: UnaryClientConnection {
    let channel: any Channel
    let handler: NIOLoopBound<HTTPClientHandler>

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Connects to `path` on one of `group`'s event loops.
    static func connect(unixSocket path: String, group: any EventLoopGroup) async throws -> HTTPClientConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(HTTPClientHandler())
                }
            }
            .connect(unixDomainSocketPath: path).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: HTTPClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return HTTPClientConnection(channel: channel, handler: handler)
    }

    func close() async {
        try? await channel.close()
    }
}
