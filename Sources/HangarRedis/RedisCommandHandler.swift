import NIOCore
import Synchronization

/// The pipeline's end on a Redis connection: writes each command as it comes and matches replies to commands in
/// order (Redis answers a connection's commands in the order it sent them), so any number of commands can be in
/// flight on one connection. Push frames (RESP3 `>`) are not replies; they go to `onPush`.
///
/// A flush waits for the end of the event loop's turn, so the commands written in one turn (the requests of several
/// callers read from their sockets in one wake-up) leave in one system call rather than one each.
///
/// Deadlines: one timer per connection, not one per command. It is armed, when it is not, for the deadline of the
/// command written (and re-armed for a command whose deadline comes before the armed time); a reply does not
/// disarm it. When it fires, a command past its deadline fails the connection (`RedisError.deadlineExceeded` for it
/// and every command behind it, whose replies could no longer be matched); else it is armed again for the earliest
/// deadline still waiting, or left unarmed when none waits. So it is always armed no later than the earliest
/// deadline waiting, and with one timeout for every command it fires about once per timeout while commands flow,
/// whatever their number.
///
/// When the connection ends, fails or sends something that is not RESP, every command still waiting fails: a reply
/// that never comes must not leave its caller hanging.
///
/// `RedisConnection.send` calls `enqueue` directly on the event loop (no trip through the pipeline, no future for
/// the write): a write that fails closes the channel, and `channelInactive` then fails what waits.
final class RedisCommandHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue
    typealias OutboundOut = ByteBuffer

    /// A command's encoded bytes, where its reply goes and by when it must come.
    struct Command: Sendable {
        var bytes: ByteBuffer
        var reply: Reply
        var deadline: NIODeadline
    }

    /// Where a reply goes: a promise, or a function called on the event loop (no future to make and complete).
    enum Reply: Sendable {
        case promise(EventLoopPromise<RESPValue>)
        case callback(@Sendable (Result<RESPValue, any Error>) -> Void)

        func complete(_ result: Result<RESPValue, any Error>) {
            switch self {
            case .promise(let promise): promise.completeWith(result)
            case .callback(let callback): callback(result)
            }
        }
    }

    private struct Waiting {
        let reply: Reply
        let deadline: NIODeadline
    }

    private var waiting = CircularBuffer<Waiting>(initialCapacity: 16)
    /// Set once the connection can no longer answer; later commands fail with it at once.
    private var failure: RedisError?
    private let onPush: (RESPValue) -> Void
    /// Counts the commands answered or failed (`RedisConnection.Counters`), for the client's choice of connection.
    let counters: RedisConnection.Counters
    private var context: ChannelHandlerContext?
    /// A flush is due at the end of the event loop's turn (see `scheduleFlush`).
    private var flushScheduled = false
    /// The deadline timer and the time it fires; nil while unarmed.
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?

    init(counters: RedisConnection.Counters, onPush: @escaping (RESPValue) -> Void = { _ in }) {
        self.counters = counters
        self.onPush = onPush
    }

    /// Commands written and not answered yet.
    var pending: Int { waiting.count }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        failAll(failure ?? .connectionClosed("the connection is closed"), context: nil)
        self.context = nil
    }

    /// Writes one command (the flush follows at the end of the turn) and waits for its reply; on the event loop.
    func enqueue(_ command: Command) {
        guard failure == nil, let context else {
            complete(command.reply, .failure(failure ?? .connectionClosed("the connection is closed")))
            return
        }
        waiting.append(Waiting(reply: command.reply, deadline: command.deadline))
        if timer.map({ command.deadline < $0.at }) ?? true { arm(at: command.deadline, context: context) }
        context.write(wrapOutboundOut(command.bytes), promise: nil)
        scheduleFlush(context: context)
    }

    /// Flushes once, after the event loop has handled every event of its current turn: the tasks it runs next come
    /// after the reads that woke it, so a command waits for no other wake-up and the turn's commands share a write.
    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            context.flush()
        }
    }

    /// (Re-)arms the deadline timer for `deadline`.
    private func arm(at deadline: NIODeadline, context: ChannelHandlerContext) {
        timer?.task.cancel()
        let task = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { self.deadlineReached() }
        timer = (task, deadline)
    }

    /// The timer fired: fails the connection when a command is past its deadline, else re-arms for the earliest.
    private func deadlineReached() {
        timer = nil
        guard let context, !waiting.isEmpty else { return }
        var earliest = waiting.first!.deadline
        for command in waiting where command.deadline < earliest { earliest = command.deadline }
        if earliest <= .now() {
            failAll(.deadlineExceeded, context: context)
        } else {
            arm(at: earliest, context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        if case .push = value {
            onPush(value)
            return
        }
        guard let command = waiting.popFirst() else {
            failAll(.connectionClosed("the server sent a reply to no command"), context: context)
            return
        }
        if case .error(let message) = value {
            complete(command.reply, .failure(RedisError.server(String(buffer: message))))
        } else {
            complete(command.reply, .success(value))
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
        timer?.task.cancel()
        timer = nil
        while let command = waiting.popFirst() { complete(command.reply, .failure(reason)) }
        context?.close(promise: nil)
    }

    private func complete(_ reply: Reply, _ result: Result<RESPValue, any Error>) {
        counters.completed.add(1, ordering: .relaxed)
        reply.complete(result)
    }
}
