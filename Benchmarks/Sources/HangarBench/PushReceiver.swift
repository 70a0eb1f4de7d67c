import Foundation
import HangarComponents
@_spi(Benchmarks) import HangarGRPC
import HangarRuntime
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// The `pubsub` scenario's push subscriber: the app `pusher`, a gRPC app whose app channel is a Unix socket the
/// bench serves itself, with Hangar's own gRPC server (as the echo server) on an event loop of its own. It answers
/// `AppCallback/OnTopicEvent` with SUCCESS at once and records, for every event, its stamp and when it arrived
/// (like `GRPCSubscriber`); `ListTopicSubscriptions` is not served (UNIMPLEMENTED: no programmatic subscriptions),
/// so what it gets is what the declarative `Subscription` resources of bench/pubsub-resources give it (topic
/// `push` of each pub/sub component). In the bench's process, so that the arrivals are read without IPC; its CPU
/// counts as the bench's.
final class PushReceiver: Sendable {
    static let appID = "pusher"
    /// The topic the declarative subscriptions of bench/pubsub-resources push to the app.
    static let topic = "push"

    private let arrivals = Mutex<[GRPCSubscriber.Arrival]>([])
    private let group: MultiThreadedEventLoopGroup

    private init(group: MultiThreadedEventLoopGroup) {
        self.group = group
    }

    /// Serves the app's callbacks on `socket` (one event-loop thread).
    static func start(socket: String) async throws -> PushReceiver {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let receiver = PushReceiver(group: group)
        let app = AppID(namespace: BenchFixture.namespace, appId: appID)
        var service = GRPCService()
        service.unary(BenchRequests.onTopicEventPath, Dapr_Proto_Runtime_V1_TopicEventRequest.self) { request, _ in
            receiver.arrived(request.data)
            return .success(Dapr_Proto_Runtime_V1_TopicEventResponse())
        }
        var logger = Logger(label: "push-receiver")
        logger.logLevel = .warning
        do {
            let server = GRPCServer.listeners(
                service: service, gate: EchoServerCommand.gate(for: app), group: group, logger: logger)
            _ = try await server.bind(unixSocket: socket, identity: .app(app))
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        return receiver
    }

    private func arrived(_ data: Data) {
        let now = NIODeadline.now().uptimeNanoseconds
        guard let stamp = BenchRequests.stamp(of: data) else { return }
        arrivals.withLock { $0.append(GRPCSubscriber.Arrival(stamp: stamp, arrived: now)) }
    }

    /// The arrivals so far whose stamp is before `until`, removed from the record.
    func take(before until: UInt64) -> [GRPCSubscriber.Arrival] {
        arrivals.withLock { arrivals in
            let taken = arrivals.filter { $0.stamp < until }
            arrivals.removeAll { $0.stamp < until }
            return taken
        }
    }

    /// Stops serving (the event loop and every connection on it).
    func stop() async {
        try? await group.shutdownGracefully()
    }
}
