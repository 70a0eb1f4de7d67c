import Logging
import NIOCore

/// The pipeline's end on a Redis connection: writes each command as it comes and matches replies to commands in
/// order (Redis answers a connection's commands in the order it sent them), so any number of commands can be in
/// flight on one connection. Push frames (RESP3 `>`) are not replies; they go to `onPush`.
///
/// A flush waits for the end of the event loop's turn, so the commands written in one turn (the requests of several
/// callers read from their sockets in one wake-up) leave in one system call rather than one each.
///
/// When the connection ends, fails or sends something that is not RESP, every command still waiting fails: a reply
/// that never comes must not leave its caller hanging.
final class RedisCommandHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = Command
    typealias OutboundOut = ByteBuffer

    /// A command's encoded bytes and where its reply goes.
    struct Command {
        var bytes: ByteBuffer
        var promise: EventLoopPromise<RESPValue>
    }

    private var waiting = CircularBuffer<EventLoopPromise<RESPValue>>(initialCapacity: 16)
    /// Set once the connection can no longer answer; later commands fail with it at once.
    private var failure: RedisError?
    private let onPush: (RESPValue) -> Void
    /// A flush is due at the end of the event loop's turn (see `flush(context:)`).
    private var flushScheduled = false

    init(onPush: @escaping (RESPValue) -> Void = { _ in }) {
        self.onPush = onPush
    }

    /// Commands written and not answered yet.
    var pending: Int { waiting.count }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let command = unwrapOutboundIn(data)
        if let failure {
            command.promise.fail(failure)
            promise?.fail(failure)
            return
        }
        waiting.append(command.promise)
        context.write(wrapOutboundOut(command.bytes), promise: promise)
    }

    /// Flushes once, after the event loop has handled every event of its current turn: the tasks it runs next come
    /// after the reads that woke it, so a command waits for no other wake-up and the turn's commands share a write.
    func flush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push = value {
            onPush(value)
            return
        }
        guard let promise = waiting.popFirst() else {
            failAll(.connectionClosed("the server sent a reply to no command"), context: context)
            return
        }
        if case .error(let message) = value {
            promise.fail(RedisError.server(String(buffer: message)))
        } else {
            promise.succeed(value)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(failure ?? .connectionClosed("the server closed it"), context: nil)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason: RedisError =
            switch error {
            case let error as RedisError: error
            case let error as RESPProtocolError: .connectionClosed(error.description)
            default: .connectionClosed("\(error)")
            }
        failAll(reason, context: context)
    }

    /// Fails every waiting command with `reason` and closes the connection.
    func failAll(_ reason: RedisError, context: ChannelHandlerContext?) {
        if failure == nil { failure = reason }
        while let promise = waiting.popFirst() { promise.fail(reason) }
        context?.close(promise: nil)
    }
}
