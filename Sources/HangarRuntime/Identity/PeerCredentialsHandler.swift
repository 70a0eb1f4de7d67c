#if canImport(Glibc)
    import Glibc
#endif
public import Logging
public import NIOCore

/// The `SO_PEERCRED` credentials of a Unix-socket peer (layout of Linux's `struct ucred`).
public struct PeerCredentials: Sendable, Hashable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// Reads the peer credentials of a connected Unix-socket channel.
    public static func of(_ channel: any Channel) -> EventLoopFuture<PeerCredentials> {
        #if os(Linux)
            guard let provider = channel as? any SocketOptionProvider else {
                return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
            }
            return provider.unsafeGetSocketOption(
                level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        #else
            return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
        #endif
    }
}

/// First handler of every app-socket connection whose app lists allowed uids/gids: checks the peer's credentials
/// when the connection becomes active and closes it, logged, on a mismatch. Nothing reaches the protocol handlers
/// before the check has passed.
public final class PeerCredentialsHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private let app: AppID
    private let uids: Set<UInt32>
    private let gids: Set<UInt32>
    private let logger: Logger

    public init(app: AppID, uids: [UInt32], gids: [UInt32], logger: Logger) {
        self.app = app
        self.uids = Set(uids)
        self.gids = Set(gids)
        self.logger = logger
    }

    public func channelActive(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        PeerCredentials.of(context.channel).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let peer) where handler.allows(peer):
                context.fireChannelActive()
                context.pipeline.syncOperations.removeHandler(handler, promise: nil)
            case .success(let peer):
                handler.logger.warning(
                    "connection refused: peer credentials not allowed for this app",
                    metadata: [
                        "tenant.namespace": "\(handler.app.namespace)", "app.id": "\(handler.app.appId)",
                        "peer.pid": "\(peer.pid)", "peer.uid": "\(peer.uid)", "peer.gid": "\(peer.gid)",
                    ])
                context.close(promise: nil)
            case .failure(let error):
                handler.logger.warning(
                    "connection refused: peer credentials unavailable",
                    metadata: ["app.id": "\(handler.app)", "error": "\(error)"])
                context.close(promise: nil)
            }
        }
    }

    func allows(_ peer: PeerCredentials) -> Bool {
        (uids.isEmpty || uids.contains(peer.uid)) && (gids.isEmpty || gids.contains(peer.gid))
    }
}
