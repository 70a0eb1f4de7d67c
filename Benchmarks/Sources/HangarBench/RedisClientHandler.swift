import NIOCore
import NIOPosix

/// One Redis connection on a Unix socket for the Redis Streams anchor: commands are pipelined, and Redis answers
/// them in order, so each reply completes the oldest waiting command. Every method runs on the channel's event
/// loop; completions are called there too.
final class RedisClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    typealias Completion = (Result<RESPValue, any Error>) -> Void

    private var context: ChannelHandlerContext?
    private var waiting = CircularBuffer<Completion>()
    private var pending = ByteBuffer()
    private var isReading = false
    private var needsFlush = false

    /// Connects to the Redis server listening on `path`; returns the channel and its handler (bound to its loop).
    static func connect(
        unixSocket path: String, group: any EventLoopGroup
    ) async throws -> (channel: any Channel, handler: NIOLoopBound<RedisClientHandler>) {
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(RedisClientHandler())
                }
            }
            .connect(unixDomainSocketPath: path).get()
        let handler = try await channel.eventLoop.submit {
            NIOLoopBound(
                try channel.pipeline.syncOperations.handler(type: RedisClientHandler.self), eventLoop: channel.eventLoop
            )
        }.get()
        return (channel, handler)
    }

    /// Sends `command` (`RESPValue.command`); `completion` gets its reply, a Redis error reply as a failure.
    func send(_ command: ByteBuffer, completion: @escaping Completion) {
        guard let context else { return completion(.failure(BenchError("redis: connection closed"))) }
        waiting.append(completion)
        context.write(wrapOutboundOut(command), promise: nil)
        if isReading { needsFlush = true } else { context.flush() }
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        isReading = true
        var bytes = unwrapInboundIn(data)
        pending.writeBuffer(&bytes)
        do {
            while let reply = try RESPValue.read(from: &pending) {
                guard let completion = waiting.popFirst() else {
                    throw BenchError("redis: a reply nobody asked for")
                }
                if case .error(let message) = reply {
                    completion(.failure(BenchError("redis: \(message)")))
                } else {
                    completion(.success(reply))
                }
            }
            pending.discardReadBytes()
        } catch {
            failAll(error)
            context.close(promise: nil)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        isReading = false
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(BenchError("redis: connection closed"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        while let completion = waiting.popFirst() { completion(.failure(error)) }
    }
}
