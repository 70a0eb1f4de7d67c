#if canImport(Glibc)
    import Glibc
#endif
package import NIOCore

/// The `SO_PEERCRED` credentials of a Unix-socket peer (layout of Linux's `struct ucred`): the process at the
/// other end, as the kernel saw it when it connected.
package struct PeerCredentials: Sendable, Hashable {
    package var pid: Int32
    package var uid: UInt32
    package var gid: UInt32

    package init(pid: Int32 = 0, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// Reads the peer credentials of a connected Unix-socket channel.
    package static func of(_ channel: any Channel) -> EventLoopFuture<PeerCredentials> {
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
