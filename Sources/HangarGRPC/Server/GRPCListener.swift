import NIOCore
import NIOHTTP2
import Synchronization

/// Asks a connection to finish: no new streams, close once the streams in flight have been answered.
struct GRPCDrainEvent: Sendable {}

/// One bound gRPC listener and the connections it accepted, so that it can be drained: stop accepting, let calls
/// in flight finish (bounded), then close.
public final class GRPCListener: Sendable {
    public let address: String
    private let connections = ConnectionSet()
    private let serverChannel = Mutex<(any Channel)?>(nil)

    init(address: String) {
        self.address = address
    }

    var tracker: ConnectionSet { connections }

    func attach(_ channel: any Channel) {
        serverChannel.withLock { $0 = channel }
    }

    /// How many connections are open.
    public var connectionCount: Int { connections.count }

    /// Stops accepting, asks every connection to finish its calls, and closes what is still open after `timeout`.
    public func drain(timeout: Duration) async {
        if let channel = serverChannel.withLock({ $0 }) { try? await channel.close() }
        let open = connections.all
        for channel in open { channel.pipeline.fireUserInboundEventTriggered(GRPCDrainEvent()) }
        let deadline = ContinuousClock.now + timeout
        while connections.count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        for channel in connections.all { try? await channel.close() }
    }
}

/// The open connections of a listener.
final class ConnectionSet: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    var count: Int { channels.withLock { $0.count } }
    var all: [any Channel] { channels.withLock { Array($0.values) } }

    func add(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLock { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in self?.channels.withLock { _ = $0.removeValue(forKey: id) } }
    }
}
