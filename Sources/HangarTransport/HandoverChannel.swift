#if canImport(Glibc)
    import Glibc
#endif

/// One end of the upgrade control connection (`HandoverMessage` for the conversation): a Unix `SOCK_SEQPACKET`
/// socket, so that every message is one packet and the descriptors sent with it (`SCM_RIGHTS`) arrive with it.
///
/// Blocking calls with timeouts (`poll`): the conversation is a handful of packets once per upgrade, run on a
/// thread of its own rather than on an event loop.
/// `@unchecked Sendable`: not thread-safe; it moves between threads with its one owner and is never shared.
package final class HandoverChannel: @unchecked Sendable {
    package private(set) var descriptor: CInt

    init(descriptor: CInt) {
        self.descriptor = descriptor
    }

    deinit { close() }

    /// Connects to the control socket at `path`; nil when no process listens there (no file, or a stale one).
    package static func connect(path: String) throws(HandoverError) -> HandoverChannel? {
        let descriptor = socket(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("socket", errno) }
        let channel = HandoverChannel(descriptor: descriptor)
        var address = try HandoverListener.address(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let code = errno
            if code == ENOENT || code == ECONNREFUSED { return nil }
            throw .system("connect \(path)", code)
        }
        return channel
    }

    /// A connected pair, for tests.
    package static func pair() throws(HandoverError) -> (HandoverChannel, HandoverChannel) {
        var descriptors: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0, &descriptors) == 0
        else { throw .system("socketpair", errno) }
        return (HandoverChannel(descriptor: descriptors[0]), HandoverChannel(descriptor: descriptors[1]))
    }

    /// The credentials of the process at the other end, as the kernel saw them when it connected.
    package func peerCredentials() throws(HandoverError) -> PeerCredentials {
        var credentials = PeerCredentials()  // the layout of struct ucred
        var length = socklen_t(MemoryLayout<PeerCredentials>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 else {
            throw .system("getsockopt SO_PEERCRED", errno)
        }
        return credentials
    }

    /// Sends one message with `descriptors` attached (they stay open here: the receiver gets copies).
    package func send(_ message: HandoverMessage, descriptors: [CInt] = []) throws(HandoverError) {
        let bytes: [UInt8]
        do {
            bytes = try message.encoded()
        } catch {
            throw .protocolError("cannot encode \(message): \(error)")
        }
        guard bytes.count <= HandoverMessage.maxPacketBytes else {
            throw .protocolError("a message of \(bytes.count) bytes is over \(HandoverMessage.maxPacketBytes)")
        }
        var control = [UInt8](repeating: 0, count: descriptors.isEmpty ? 0 : Self.controlSpace(descriptors.count))
        if !descriptors.isEmpty {
            control.withUnsafeMutableBytes { buffer in
                let header = buffer.baseAddress!.assumingMemoryBound(to: cmsghdr.self)
                header.pointee.cmsg_len = Self.controlLength(descriptors.count)
                header.pointee.cmsg_level = SOL_SOCKET
                header.pointee.cmsg_type = CInt(SCM_RIGHTS)
                let data = buffer.baseAddress! + Self.headerSpace
                descriptors.withUnsafeBytes { data.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
        }
        let sent = bytes.withUnsafeBytes { payload in
            control.withUnsafeMutableBytes { controlBuffer in
                var vector = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBuffer.count > 0 ? controlBuffer.baseAddress : nil
                    header.msg_controllen = controlBuffer.count
                    return retryingInterrupts { sendmsg(descriptor, &header, CInt(MSG_NOSIGNAL)) }
                }
            }
        }
        guard sent == bytes.count else { throw .system("sendmsg", sent < 0 ? errno : EMSGSIZE) }
    }

    /// Waits up to `timeout` for the next message; the descriptors that came with it are the caller's to close.
    /// Throws `HandoverError.closed` when the peer is gone, `.timedOut` when nothing came.
    package func receive(timeout: Duration) throws(HandoverError) -> (HandoverMessage, [CInt]) {
        try wait(for: POLLIN, timeout: timeout)
        var payload = [UInt8](repeating: 0, count: HandoverMessage.maxPacketBytes)
        var control = [UInt8](repeating: 0, count: Self.controlSpace(HandoverMessage.socketsPerPacket + 8))
        var flags: CInt = 0
        let received = payload.withUnsafeMutableBytes { payloadBuffer in
            control.withUnsafeMutableBytes { controlBuffer in
                var vector = iovec(iov_base: payloadBuffer.baseAddress, iov_len: payloadBuffer.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var header = msghdr()
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBuffer.baseAddress
                    header.msg_controllen = controlBuffer.count
                    let count = retryingInterrupts { recvmsg(descriptor, &header, CInt(MSG_CMSG_CLOEXEC)) }
                    flags = header.msg_flags
                    return (count, header.msg_controllen)
                }
            }
        }
        let (count, controlLength) = received
        guard count >= 0 else { throw .system("recvmsg", errno) }
        let descriptors = Self.descriptors(in: control, length: controlLength)
        guard count > 0 else {
            descriptors.forEach { Glibc.close($0) }
            throw .closed
        }
        guard flags & CInt(MSG_TRUNC) == 0, flags & CInt(MSG_CTRUNC) == 0 else {
            descriptors.forEach { Glibc.close($0) }
            throw .protocolError("a message or its descriptors did not fit (flags \(flags))")
        }
        do {
            return (try HandoverMessage.decode(payload.prefix(count)), descriptors)
        } catch {
            descriptors.forEach { Glibc.close($0) }
            throw .protocolError("cannot decode a message: \(error)")
        }
    }

    package func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    private func wait(for events: CInt, timeout: Duration) throws(HandoverError) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = max(.zero, deadline - ContinuousClock.now)
            var poller = pollfd(fd: descriptor, events: Int16(events), revents: 0)
            let ready = poll(&poller, 1, left.pollMilliseconds)
            if ready > 0 { return }
            if ready == 0 { throw .timedOut }
            if errno != EINTR { throw .system("poll", errno) }
        }
    }

    // MARK: Control messages (the CMSG_* macros, which Swift does not import)

    private static let alignment = MemoryLayout<Int>.size
    private static func aligned(_ length: Int) -> Int { (length + alignment - 1) & ~(alignment - 1) }
    private static var headerSpace: Int { aligned(MemoryLayout<cmsghdr>.size) }
    private static func controlLength(_ count: Int) -> Int { headerSpace + count * MemoryLayout<CInt>.size }
    private static func controlSpace(_ count: Int) -> Int { headerSpace + aligned(count * MemoryLayout<CInt>.size) }

    /// The descriptors of the `SCM_RIGHTS` messages in a received control buffer.
    private static func descriptors(in control: [UInt8], length: Int) -> [CInt] {
        var result: [CInt] = []
        control.withUnsafeBytes { buffer in
            var offset = 0
            while offset + headerSpace <= min(length, buffer.count) {
                let header = buffer.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                let messageLength = Int(header.cmsg_len)
                guard messageLength >= headerSpace, offset + messageLength <= buffer.count else { break }
                if header.cmsg_level == SOL_SOCKET, header.cmsg_type == CInt(SCM_RIGHTS) {
                    let count = (messageLength - headerSpace) / MemoryLayout<CInt>.size
                    for index in 0..<count {
                        result.append(
                            buffer.loadUnaligned(
                                fromByteOffset: offset + headerSpace + index * MemoryLayout<CInt>.size, as: CInt.self))
                    }
                }
                offset += aligned(messageLength)
            }
        }
        return result
    }
}

/// The running process's control socket: a `SOCK_SEQPACKET` Unix socket, mode 0600, that its successor connects
/// to. Only a peer with the same uid is served (checked with `SO_PEERCRED` on accept, besides the file's mode).
/// `@unchecked Sendable`: used by the one thread that accepts, then closed by its owner after that thread ended.
package final class HandoverListener: @unchecked Sendable {
    private var descriptor: CInt
    package let path: String
    /// The socket file's inode when bound: at close, the file is removed only if it is still this one (a successor
    /// may have bound its own control socket at the same path by then).
    private let inode: ino_t

    package init(path: String) throws(HandoverError) {
        let descriptor = socket(AF_UNIX, CInt(SOCK_SEQPACKET.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw .system("socket", errno) }
        var address: sockaddr_un
        do {
            address = try Self.address(path)
        } catch {
            Glibc.close(descriptor)
            throw error
        }
        ListeningSocket.removeSocketFile(path)
        // Bound with no permission for anyone but the owner from the start (umask), then listening.
        let mask = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        let bindError = errno
        umask(mask)
        var info = stat()
        guard bound == 0, chmod(path, 0o600) == 0, listen(descriptor, 4) == 0, lstat(path, &info) == 0 else {
            let code = bound == 0 ? errno : bindError
            Glibc.close(descriptor)
            throw .system("listen on \(path)", code)
        }
        self.descriptor = descriptor
        self.path = path
        self.inode = info.st_ino
    }

    deinit { close(removingFile: false) }

    /// Waits up to `timeout` for a connection; nil when none came. A peer with another uid is closed and reported.
    package func accept(timeout: Duration) throws(HandoverError) -> HandoverChannel? {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, timeout.pollMilliseconds)
        guard ready > 0 else {
            if ready < 0, errno != EINTR { throw .system("poll", errno) }
            return nil
        }
        let connection = Glibc.accept(descriptor, nil, nil)
        guard connection >= 0 else {
            if errno == EAGAIN || errno == EINTR || errno == ECONNABORTED { return nil }
            throw .system("accept", errno)
        }
        _ = fcntl(connection, F_SETFD, FD_CLOEXEC)
        let channel = HandoverChannel(descriptor: connection)
        let peer = try channel.peerCredentials()
        guard peer.uid == getuid() else { throw .foreignPeer(peer) }
        return channel
    }

    /// Stops listening; removes the socket file when asked and it is still this listener's.
    package func close(removingFile: Bool) {
        guard descriptor >= 0 else { return }
        Glibc.close(descriptor)
        descriptor = -1
        var info = stat()
        if removingFile, lstat(path, &info) == 0, info.st_ino == inode { unlink(path) }
    }

    static func address(_ path: String) throws(HandoverError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw .protocolError("the control socket path '\(path)' is too long for a Unix socket")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        return address
    }
}

/// Why a hand-over step failed.
package enum HandoverError: Error, CustomStringConvertible, Equatable {
    case system(String, CInt)
    case protocolError(String)
    case foreignPeer(PeerCredentials)
    case timedOut
    case closed

    package var description: String {
        switch self {
        case .system(let what, let code): "\(what): \(String(cString: strerror(code)))"
        case .protocolError(let message): message
        case .foreignPeer(let peer): "a process of another uid (\(peer.uid), pid \(peer.pid)) connected; refused"
        case .timedOut: "no answer in time"
        case .closed: "the other process closed the connection"
        }
    }
}

private func retryingInterrupts(_ call: () -> Int) -> Int {
    while true {
        let result = call()
        if result >= 0 || errno != EINTR { return result }
    }
}

extension Duration {
    /// Whole milliseconds, rounded up, for `poll`.
    fileprivate var pollMilliseconds: CInt {
        let (seconds, attoseconds) = components
        return CInt(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}
