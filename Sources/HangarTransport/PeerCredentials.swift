#if canImport(Glibc)
    import Glibc
#endif
public import NIOCore

/// The `SO_PEERCRED` credentials of a Unix-socket peer (layout of Linux's `struct ucred`): the process at the
/// other end, as the kernel saw it when it connected.
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
