import NIOCore
import NIOHTTP2
import NIOPosix

/// One HTTP/2 connection to a gRPC server on a Unix socket, carrying any number of concurrent unary calls.
struct GRPCClientConnection: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<GRPCClientHandler>

    var eventLoop: any EventLoop { channel.eventLoop }

    /// Connects to `path` on one of `group`'s event loops.
    static func connect(unixSocket path: String, group: any EventLoopGroup) async throws -> GRPCClientConnection {
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.maxMessagesPerRead, value: 16)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // The bench writes well-formed headers itself: skip validating them, to keep the client cheap.
                    try sync.addHandler(
                        NIOHTTP2Handler(
                            mode: .client, initialSettings: GRPCClientHandler.settings,
                            headerBlockValidation: .disabled, contentLengthValidation: .disabled))
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

    /// One unary call from any thread; returns the response message without its prefix.
    func unary(path: String, message: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        let handler = self.handler
        return eventLoop.flatSubmit {
            let promise = channel.eventLoop.makePromise(of: ByteBuffer.self)
            handler.value.call(headers: GRPCClientHandler.requestHeaders(path: path), message: message) { result in
                promise.completeWith(result.mapError { $0 as any Error })
            }
            return promise.futureResult
        }
    }

    func close() async {
        try? await channel.close()
    }
}
