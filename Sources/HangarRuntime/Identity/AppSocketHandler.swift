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

/// First handler of every connection on an app's socket. When the connection becomes active it checks the peer's
/// credentials against the app's *current* `uids`/`gids` (so a reconfiguration applies to new connections), then
/// counts the connection towards the app's `maxConnections`. A peer that is not allowed is closed and logged;
/// nothing reaches the protocol handlers before the check has passed. A connection over `maxConnections` is kept
/// (its requests are refused with a quota error, which says more than a reset) but is logged.
public final class AppSocketHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = NIOAny

    private let app: AppID
    private let registry: TenantRegistry
    private let logger: Logger

    public init(app: AppID, registry: TenantRegistry, logger: Logger) {
        self.app = app
        self.registry = registry
        self.logger = logger
    }

    public func channelActive(context: ChannelHandlerContext) {
        guard let spec = registry.app(app), let account = registry.account(app) else {
            logger.notice(
                "connection refused: the app is no longer served",
                metadata: ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)"])
            context.close(promise: nil)
            return
        }
        if spec.uids.isEmpty && spec.gids.isEmpty {
            return accept(context, account)
        }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        PeerCredentials.of(context.channel).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let peer) where Self.allows(peer, spec):
                handler.accept(context, account)
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

    private func accept(_ context: ChannelHandlerContext, _ account: AppAccount) {
        if !account.track(context.channel) {
            logger.warning(
                "connection over the app's maxConnections quota: its calls will be refused",
                metadata: [
                    "tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)",
                    "quota.limit": "\(account.maxConnections ?? 0)",
                ])
        }
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(self, promise: nil)
    }

    static func allows(_ peer: PeerCredentials, _ spec: AppSpec) -> Bool {
        (spec.uids.isEmpty || spec.uids.contains(peer.uid)) && (spec.gids.isEmpty || spec.gids.contains(peer.gid))
    }
}
