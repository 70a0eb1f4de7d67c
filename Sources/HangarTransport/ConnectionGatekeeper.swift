public import NIOCore

/// Decides whether an accepted connection may be served, before any of its bytes reach the front-end (for an
/// app's socket: is the app still served, are the peer's credentials allowed, does the connection fit its quota).
public protocol ConnectionGatekeeper: Sendable {
    /// Called on the connection's event loop when it becomes active; `true` serves it, `false` closes it (the
    /// gatekeeper logs why). The future must complete on `channel.eventLoop`.
    func admit(_ channel: any Channel) -> EventLoopFuture<Bool>
}

/// First handler of a connection behind a `ConnectionGatekeeper`: holds `channelActive` and any bytes read until
/// the gatekeeper decides, then either passes them on and removes itself, or closes the connection. Nothing reaches
/// the protocol handlers of a connection that is refused.
final class ConnectionGateHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private enum State {
        case deciding(held: [NIOAny], readComplete: Bool)
        case refused
    }

    private let gatekeeper: any ConnectionGatekeeper
    private var state = State.deciding(held: [], readComplete: false)

    init(gatekeeper: any ConnectionGatekeeper) {
        self.gatekeeper = gatekeeper
    }

    func channelActive(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        gatekeeper.admit(context.channel).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(true): handler.open(context)
            case .success(false), .failure:
                handler.state = .refused
                context.close(promise: nil)
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        state = .refused
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .deciding(var held, let readComplete) = state else { return }
        state = .refused  // not kept while `held` grows, so the array is uniquely referenced
        held.append(data)
        state = .deciding(held: held, readComplete: readComplete)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if case .deciding(let held, _) = state { state = .deciding(held: held, readComplete: true) }
    }

    /// Serves the connection: activates the handlers after this one, gives them what was read while deciding, and
    /// leaves the pipeline.
    private func open(_ context: ChannelHandlerContext) {
        // A connection that closed while the gatekeeper decided is not activated: the handlers behind saw its
        // channelInactive already, and one activated after it (timers armed, buffers written) would never be freed.
        guard case .deciding(let held, let readComplete) = state, context.channel.isActive else { return }
        state = .deciding(held: [], readComplete: false)
        context.fireChannelActive()
        for data in held { context.fireChannelRead(data) }
        if readComplete { context.fireChannelReadComplete() }
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }
}
