import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime

/// Push delivery while hangard starts: a subscription given before its component serves (a `pubsub.sqlite` is
/// INIT until its file is open, and declarative subscriptions are given at start-up) waits for it and then
/// delivers, instead of being refused for good.
@Suite("Push delivery at start-up")
struct PushDeliveryStartupTests {
    static let orders = AppID(namespace: "team-a", appId: "orders")
    static let billing = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test("a subscription on a component still initialising starts once the component serves, and delivers")
    func waitsForItsComponent() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-push-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var orders = AppSpec(appId: "orders")
        orders.appChannel = AppChannelSpec(protocol: .grpc)
        let channel = ScriptedAppChannel()
        let runtime = try Runtime(
            configuration: NodeConfiguration(
                tenants: [TenantSpec(namespace: "team-a", apps: [orders, AppSpec(appId: "billing")])],
                components: [
                    ComponentSpec(name: "pubsub", type: "pubsub.sqlite", metadata: ["connectionString": "ps.db"])
                ]),
            dataDirectory: directory.path, maxRequestBytes: 1 << 20, componentRegistry: .node,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, threadPool: NIOThreadPool.singleton,
            etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)), appChannelFactory: { _, _ in channel },
            logger: Self.logger)
        let push = PushDelivery(
            pubsub: runtime.pubsub, channels: runtime.appChannels,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Self.logger, retryDelay: .milliseconds(20))
        #expect(runtime.components.health.first { $0.name == "pubsub" }?.status == .initialising)

        push.setSubscriptions(
            [
                SubscriptionSpec(
                    origin: .declarative(name: "orders", namespace: nil, source: "test"), pubsubName: "pubsub",
                    topic: "orders",
                    routes: [SubscriptionRoute(path: "/orders")], deadLetterTopic: nil, bulk: nil, metadata: [:])
            ], for: Self.orders)
        // Let the subscription meet the component while it is still initialising.
        try await Task.sleep(for: .milliseconds(100))
        await runtime.components.initialise()
        try await eventually { push.runningCount == 1 }

        let loop = MultiThreadedEventLoopGroup.singleton.any()
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Caller(app: Self.orders, transport: .unixSocket),
            tenant: nil)
        // The consumer exists once the subscription has started (at the end of the log): what follows is delivered.
        try await eventually { (try? await handle.ensureConsumer("orders", on: loop).get()) != nil }
        let request = PublishRequest(
            pubsubName: "pubsub", topic: "orders", data: Data("after start-up".utf8), contentType: "text/plain",
            metadata: [:])
        try await runtime.pubsub.publish(Self.billing, request, on: loop).get()
        try await eventually { channel.count == 1 }
        #expect(
            channel.events.withLock { $0.map { String(decoding: $0.event.data, as: UTF8.self) } } == [
                "after start-up"
            ])
        push.stopAll()
        try await runtime.components.close(on: loop).get()
    }

    /// Waits until `condition` holds (at most 20 s: a generous bound, not a timing assertion).
    func eventually(_ condition: () async -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        var holds = await condition()
        while !holds, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
            holds = await condition()
        }
        #expect(holds)
    }
}
