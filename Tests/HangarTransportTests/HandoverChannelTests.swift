#if canImport(Glibc)
    import Glibc
#endif
import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import HangarTransport

/// A short directory for Unix socket paths (107 bytes at most).
private func temporaryDirectory() throws -> String {
    let path = "/tmp/hangar-handover-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The inode of the socket a descriptor refers to: two descriptors of one socket share it.
private func inode(_ descriptor: CInt) -> ino_t {
    var info = stat()
    #expect(fstat(descriptor, &info) == 0)
    return info.st_ino
}

/// Connects to a Unix socket file; the descriptor, or -1.
private func connectUnix(_ path: String) -> CInt {
    let descriptor = socket(AF_UNIX, CInt(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    guard connected == 0 else {
        close(descriptor)
        return -1
    }
    return descriptor
}

@Suite("Upgrade hand-over")
struct HandoverChannelTests {
    @Test(
        "every message survives encoding and decoding",
        arguments: [
            HandoverMessage.hello(pid: 42, protocolVersion: HandoverMessage.protocolVersion),
            .offer(pid: 7, drainTimeoutMilliseconds: 10_000),
            .sockets(
                [.unix(path: "/run/hangar/team-a/orders/dapr-orders-grpc.socket"), .tcp(role: "http", address: "127.0.0.1:3500")],
                last: true),
            .sockets([], last: false),
            .takeover, .released, .refused(reason: "this hangard is shutting down"),
        ])
    func roundTrip(_ message: HandoverMessage) throws {
        #expect(try HandoverMessage.decode(message.encoded()) == message)
    }

    @Test("a listening socket sent with a message arrives as a descriptor that accepts its connections")
    func passesListeningSockets() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/app.socket"
        let listening = try ListeningSocket.make(try SocketAddress(unixDomainSocketPath: path))
        defer { close(listening) }
        let (sender, receiver) = try HandoverChannel.pair()

        try sender.send(.sockets([.unix(path: path)], last: true), descriptors: [listening])
        let (message, descriptors) = try receiver.receive(timeout: .seconds(5))
        #expect(message == .sockets([.unix(path: path)], last: true))
        try #require(descriptors.count == 1)
        let received = descriptors[0]
        defer { close(received) }
        #expect(received != listening)
        #expect(inode(received) == inode(listening))
        #expect(fcntl(received, F_GETFD) & FD_CLOEXEC != 0, "received descriptors are close-on-exec")

        // The sender closes its copy (an old process that stopped accepting): the socket and its file live on.
        close(listening)
        let client = connectUnix(path)
        #expect(client >= 0)
        defer { close(client) }
        let accepted = accept(received, nil, nil)
        #expect(accepted >= 0)
        close(accepted)
    }

    @Test("a packet carries as many descriptors as the protocol puts in one")
    func fullPacket() throws {
        var pipe: [CInt] = [-1, -1]
        #expect(Glibc.pipe(&pipe) == 0)
        defer { pipe.forEach { close($0) } }
        let (sender, receiver) = try HandoverChannel.pair()
        let count = HandoverMessage.socketsPerPacket
        let sockets = (0..<count).map { HandoverSocket.tcp(role: "r\($0)", address: "127.0.0.1:\($0)") }
        try sender.send(.sockets(sockets, last: true), descriptors: Array(repeating: pipe[0], count: count))
        let (message, descriptors) = try receiver.receive(timeout: .seconds(5))
        defer { descriptors.forEach { close($0) } }
        #expect(message == .sockets(sockets, last: true))
        #expect(descriptors.count == count)
        #expect(Set(descriptors.map(inode)) == [inode(pipe[0])])
    }

    @Test("waiting ends with timedOut when nothing comes and with closed when the peer is gone")
    func timeoutAndClose() throws {
        let (sender, receiver) = try HandoverChannel.pair()
        #expect(throws: HandoverError.timedOut) { try receiver.receive(timeout: .milliseconds(20)) }
        sender.close()
        #expect(throws: HandoverError.closed) { try receiver.receive(timeout: .seconds(5)) }
    }

    @Test("the control socket is the owner's only, names the peer, and is removed only while it is its own")
    func controlSocket() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = "\(directory)/control.sock"
        #expect(try HandoverChannel.connect(path: path) == nil, "nobody listens yet")

        let first = try HandoverListener(path: path)
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let client = try #require(try HandoverChannel.connect(path: path))
        let server = try #require(try first.accept(timeout: .seconds(5)))
        let peer = try server.peerCredentials()
        #expect(peer.pid == getpid() && peer.uid == getuid())
        try client.send(.hello(pid: getpid(), protocolVersion: 1))
        #expect(try server.receive(timeout: .seconds(5)).0 == .hello(pid: getpid(), protocolVersion: 1))

        // A successor binds its own control socket at the path: closing the first leaves it.
        let second = try HandoverListener(path: path)
        first.close(removingFile: true)
        #expect(lstat(path, &info) == 0)
        second.close(removingFile: true)
        #expect(lstat(path, &info) != 0)
        #expect(try HandoverChannel.connect(path: path) == nil, "a stale or missing file means nobody listens")
    }

    @Test("a drained listener leaves its socket file, and its hand-over descriptor is the socket NIO served")
    func listenerKeepsItsDescriptor() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ListenerBootstrap<Void>(group: group) { _, _ in }
        let path = "\(directory)/app.socket"
        let listener = try await bootstrap.bind(unixSocket: path, identity: ())
        let copy = try ListeningSocket.duplicate(listener.handoverDescriptor)
        defer { close(copy) }

        await listener.drain(timeout: .zero)
        #expect(listener.handoverDescriptor == -1)
        var info = stat()
        #expect(lstat(path, &info) == 0, "draining does not remove the socket file")
        // The copy still accepts on the same socket: a successor serving it.
        let client = connectUnix(path)
        #expect(client >= 0)
        defer { close(client) }
        let accepted = accept(copy, nil, nil)
        #expect(accepted >= 0)
        close(accepted)

        // The successor adopts it with NIO, and keeps a copy of its own for the next upgrade.
        let adopted = try await bootstrap.adopt(unixSocket: try ListeningSocket.duplicate(copy), path: path, identity: ())
        #expect(inode(adopted.handoverDescriptor) == inode(copy))
        await adopted.drain(timeout: .zero)
        try await group.shutdownGracefully()
    }
}
