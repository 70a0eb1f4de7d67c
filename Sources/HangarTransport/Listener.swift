#if canImport(Glibc)
    import Glibc
#endif
import Logging
package import NIOCore
import NIOPosix
import HangarSync

/// Asks a connection to finish: take no new requests, close once those in flight have been answered. Each
/// front-end's connection handler acts on it (gRPC sends GOAWAY; HTTP/1.1 closes after the current response).
package struct ListenerDrainEvent: Sendable {
    package init() {}
}

/// One bound listener (an app's socket or a TCP address) and the connections it accepted, so that it can be
/// drained: stop accepting, let calls in flight finish (bounded), then close. Front-end neutral: the gRPC and the
/// HTTP servers, and the operator's metrics endpoint, all bind through `ListenerBootstrap` and hold one of these.
///
/// It also keeps a descriptor of the listening socket of its own (`handoverDescriptor`), which an upgrade passes to
/// the successor process; closing NIO's channel closes NIO's descriptor only, so the socket (and, for a Unix
/// socket, its file) lives on in the successor. The copy is closed when the listener has drained.
public final class Listener: Sendable {
    package let address: String
    private let connections = ConnectionSet()
    private let serverChannel = Locked<(any Channel)?>(nil)
    private let descriptor: Locked<CInt>

    init(address: String, descriptor: CInt) {
        self.address = address
        self.descriptor = Locked(descriptor)
    }

    deinit {
        descriptor.withLock { if $0 >= 0 { close($0) } }
    }

    /// The listener's own descriptor of its listening socket, to hand to a successor process; -1 once drained.
    package var handoverDescriptor: CInt { descriptor.withLock { $0 } }

    var tracker: ConnectionSet { connections }

    func attach(_ channel: any Channel) {
        serverChannel.withLock { $0 = channel }
    }

    /// The address the listener is bound to (for a TCP port 0, the port chosen).
    package var localAddress: SocketAddress? { serverChannel.withLock { $0?.localAddress } }

    /// Stops accepting, asks every connection to finish its calls, and closes what is still open after `timeout`.
    /// `whenClosed` runs once no new connection can come in (the listener's socket file may go then; a Unix socket's
    /// file is never removed here, since after an upgrade's hand-over a successor serves it).
    package func drain(timeout: Duration, whenClosed: () -> Void = {}) async {
        if let channel = serverChannel.withLock({ $0 }) { try? await channel.close() }
        whenClosed()
        let open = connections.all
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(ListenerDrainEvent()) }
        let deadline = ContinuousClock.now + timeout
        while connections.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for channel in connections.all { try? await channel.close() }
        descriptor.withLock {
            if $0 >= 0 { close($0) }
            $0 = -1
        }
    }
}

/// The open connections of a listener.
final class ConnectionSet: Sendable {
    private let channels = Locked<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLock { $0.count } }
    var all: [any Channel] { channels.withLock { Array($0.values) } }

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }
}
