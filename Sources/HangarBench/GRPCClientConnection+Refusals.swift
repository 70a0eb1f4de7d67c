import NIOCore
import NIOHTTP2
import NIOPosix

extension GRPCClientConnection {
    /// swift-nio-http2's default limit on RST_STREAM frames a connection may receive (and on stream errors it may
    /// see) in 30 s before it treats the peer as a rapid-reset attacker and closes the connection.
    static let nioDefaultResetLimit = 200

    /// As `connect(unixSocket:group:)`, but tolerating `resetLimit` RST_STREAM frames (and stream errors, and
    /// connection "glitches") per 30 s instead of swift-nio-http2's 200. Hangard follows each quota refusal, which
    /// it sends as soon as it has read the HEADERS, with a RST_STREAM(NO_ERROR); a client refused more than 200
    /// times in 30 s on one connection would otherwise close that connection itself (`ExcessiveRSTFrames`).
    static func connect(
        unixSocket path: String, group: any EventLoopGroup, resetLimit: Int
    ) async throws -> GRPCClientConnection {
        var connectionConfiguration = NIOHTTP2Handler.ConnectionConfiguration()
        connectionConfiguration.initialSettings = GRPCClientHandler.settings
        connectionConfiguration.headerBlockValidation = .disabled
        connectionConfiguration.contentLengthValidation = .disabled
        connectionConfiguration.maximumConnectionGlitches = max(
            connectionConfiguration.maximumConnectionGlitches, resetLimit)
        var streamConfiguration = NIOHTTP2Handler.StreamConfiguration()
        streamConfiguration.streamResetFrameRateLimit.maximumCount = resetLimit
        streamConfiguration.streamErrorRateLimit.maximumCount = resetLimit
        let (connection, stream) = (connectionConfiguration, streamConfiguration)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOHTTP2Handler(
                            mode: .client, connectionConfiguration: connection, streamConfiguration: stream))
                    try sync.addHandler(GRPCClientHandler())
                }
            }
            .connect(unixDomainSocketPath: path).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: GRPCClientHandler.self), eventLoop: channel.eventLoop)
        }.get()
        return GRPCClientConnection(channel: channel, handler: handler)
    }
}
