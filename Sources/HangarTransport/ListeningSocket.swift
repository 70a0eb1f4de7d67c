#if canImport(Glibc)
    import Glibc
#endif
package import NIOCore

/// Listening sockets made with plain system calls rather than by NIO's `bind`, so that hangard keeps a descriptor of
/// each one of its own (NIO does not give its descriptor out): that copy is what an upgrade hands to the successor
/// process (`HandoverChannel`), while NIO serves on the original.
package enum ListeningSocket {
    /// The backlog of every listener: connections made while no process accepts (during an upgrade, between the
    /// old process's last accept and the new one's first) wait there.
    package static let backlog: CInt = 256

    /// A socket bound to `address` and listening, close-on-exec. For a Unix socket, an existing socket file at the
    /// path is replaced (anything else there is an error); TCP sockets get `SO_REUSEADDR`.
    package static func make(_ address: SocketAddress) throws(ListeningSocketError) -> CInt {
        let descriptor = socket(address.protocol.rawValue, CInt(SOCK_STREAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("socket", errno) }
        var one: CInt = 1
        if case .unixDomainSocket = address {
            if let path = address.pathname { removeSocketFile(path) }
        } else {
            setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        }
        let bound = address.withSockAddr { pointer, length in bind(descriptor, pointer, socklen_t(length)) }
        guard bound == 0 else {
            let code = errno
            close(descriptor)
            throw .system("bind \(address.shown)", code)
        }
        guard listen(descriptor, backlog) == 0 else {
            let code = errno
            close(descriptor)
            throw .system("listen \(address.shown)", code)
        }
        return descriptor
    }

    /// A second, close-on-exec descriptor of the same socket.
    package static func duplicate(_ descriptor: CInt) throws(ListeningSocketError) -> CInt {
        let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw .system("dup", errno) }
        return copy
    }

    /// Removes a socket file; anything that is not a socket is left alone.
    static func removeSocketFile(_ path: String) {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return }
        unlink(path)
    }
}

/// A listening socket could not be made.
package enum ListeningSocketError: Error, CustomStringConvertible {
    case system(String, CInt)

    package var description: String {
        switch self {
        case .system(let what, let code): "\(what): \(String(cString: strerror(code))) (errno: \(code))"
        }
    }
}

extension SocketAddress {
    /// `unix:PATH` or `HOST:PORT`, for errors.
    fileprivate var shown: String {
        if let pathname { return "unix:\(pathname)" }
        return "\(ipAddress ?? "?"):\(port ?? 0)"
    }
}
