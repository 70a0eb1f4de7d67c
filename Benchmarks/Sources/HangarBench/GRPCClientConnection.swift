import NIOCore
import NIOHTTP2
import NIOPosix

/// One HTTP/2 connection to a gRPC server on a Unix socket, carrying any number of concurrent unary calls.
struct GRPCClientConnection: UnaryClientConnection {
    let channel: any Channel
    let handler: NIOLoopBound<GRPCClientHandler>

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Connects to `path` on one of `group`'s event loops. `resetLimit`, when given, replaces swift-nio-http2's
    /// limit (200 per 30 s) on RST_STREAM frames, stream errors and connection "glitches" a connection tolerates
    /// before it treats the peer as a rapid-reset attacker and closes itself (`ExcessiveRSTFrames`). `streamWindow`
    /// is every stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    static func connect(
        unixSocket path: String, group: any EventLoopGroup, resetLimit: Int? = nil,
        streamWindow: Int = GRPCClientHandler.streamWindow
    ) async throws -> GRPCClientConnection {
        var connectionConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
        connectionConfiguration.initialSettings = GRPCClientHandler.settings(streamWindow: streamWindow)
        // The bench writes well-formed headers itself: skip validating them, to keep the client cheap.
        connectionConfiguration.headerBlockValidation = .disabled
        connectionConfiguration.contentLengthValidation = .disabled
        var streamConfiguration = NIOHTTP2Handler.StreamConfiguration()
        if let resetLimit {
            connectionConfiguration.maximumConnectionGlitches = max(
                connectionConfiguration.maximumConnectionGlitches, resetLimit)
            streamConfiguration.streamResetFrameRateLimit.maximumCount = resetLimit
            streamConfiguration.streamErrorRateLimit.maximumCount = resetLimit
        }
        let (connection, stream) = (connectionConfiguration, streamConfiguration)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOHTTP2Handler(
                            mode: .client, connectionConfiguration: connection, streamConfiguration: stream))
                    try sync.addHandler(GRPCClientHandler(streamWindow: streamWindow))
                }
            }
            .connect(unixDomainSocketPath: path).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: GRPCClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return GRPCClientConnection(channel: channel, handler: handler)
    }

    /// One unary call from any thread; returns the response message without its prefix.
    func unary(path: String, message: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        call(GRPCClientRequest(path: path, message: message))
    }

    func close() async {
        try? await channel.close()
    }
}
