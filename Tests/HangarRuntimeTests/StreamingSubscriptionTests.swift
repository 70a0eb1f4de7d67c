import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime
import HangarSync

/// Streaming subscriptions over a real in-memory component: the event Dapr builds from the stored envelope, the
/// bound on events in flight, and what the end of a stream gives back.
@Suite("Streaming subscriptions")
struct StreamingSubscriptionTests {
    static let caller = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)
    static let publisher = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    let loop = MultiThreadedEventLoopGroup.singleton.any()
    let runtime: Runtime

    init() throws {
        let configuration = NodeConfiguration(
            tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders"), AppSpec(appId: "billing")])],
            components: [ComponentSpec(name: "pubsub", type: "pubsub.in-memory")])
        runtime = try Runtime(
            configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            threadPool: NIOThreadPool.singleton, etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func publish(_ text: String, contentType: String = "", topic: String = "t") async throws {
        let request = PublishRequest(
            pubsubName: "pubsub", topic: topic, data: Data(text.utf8), contentType: contentType)
        try await runtime.pubsub.publish(Self.publisher, request, on: loop).get()
    }

    /// Runs what the loop has queued (twice: a fetch's completion queues its handling).
    func settle() async throws {
        for _ in 0..<3 { try await loop.submit {}.get() }
    }

    @Test("the event is built from the stored envelope as Dapr builds it")
    func eventFromEnvelope() async throws {
        let sent = Locked<[SubscriptionEvent]>([])
        let loop = self.loop
        let subscription = try await loop.flatSubmit {
            runtime.pubsub.subscribe(
                Self.caller, pubsubName: "pubsub", topic: "t", deadLetterTopic: "", logger: nil, on: loop
            ) { events in
                sent.withLock { $0.append(contentsOf: events) }
                return true
            }.future(on: loop)
        }.get()
        try await loop.submit { subscription.start() }.get()
        try await publish(#"{"b":1,"a":"<x>"}"#, contentType: "application/json")
        try await publish("plain", contentType: "text/plain")
        try await publish("opaque", contentType: "application/x-thing")
        try await settle()
        let events = sent.withLock { $0 }
        try #require(events.count == 3)
        #expect(events[0].dataContentType == "application/json")
        let json = try #require(JSONSerialization.jsonObject(with: events[0].data) as? [String: Any])
        #expect(json["a"] as? String == "<x>" && json["b"] as? Int == 1)
        #expect(events[0].source == "billing" && events[0].type == "com.dapr.event.sent")
        #expect(events[0].topic == "t" && events[0].pubsubName == "pubsub" && events[0].path == "/")
        let extensions = events[0].extensions
        #expect(extensions["topic"] == .string("t") && extensions["pubsubname"] == .string("pubsub"))
        #expect(extensions["id"] == nil && extensions["data"] == nil && extensions["traceparent"] != nil)
        #expect(events[1].data == Data("plain".utf8))
        // Neither text, XML nor JSON: Dapr delivers no data over gRPC.
        #expect(events[2].data.isEmpty && events[2].dataContentType == "application/x-thing")
        try await loop.submit { subscription.stop() }.get()
    }

    @Test("a message published raw gets the envelope Dapr makes up for it")
    func rawPayload() throws {
        let message = PubSubMessage(data: Data([0, 1, 2]), contentType: "application/octet-stream")
        let event = try SubscriptionEvent.make(message, topic: "t", pubsubName: "p", path: "/")
        #expect(event.source == "Dapr" && event.dataContentType == "application/octet-stream")
        #expect(event.data == Data([0, 1, 2]) && !event.id.isEmpty && event.specVersion == "1.0")
    }

    @Test("at most maxInFlight events are unanswered; answers make room a quarter at a time; the end gives them back")
    func inFlightBound() async throws {
        let sent = Locked<[SubscriptionEvent]>([])
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Self.caller, tenant: nil)
        _ = try await handle.ensureConsumer("t", on: loop).get()
        let total = StreamingSubscription.maxInFlight + 20
        for index in 0..<total { try await publish("m\(index)") }
        let loop = self.loop
        let subscription = try await loop.flatSubmit {
            runtime.pubsub.subscribe(
                Self.caller, pubsubName: "pubsub", topic: "t", deadLetterTopic: "", logger: nil, on: loop
            ) { events in
                sent.withLock { $0.append(contentsOf: events) }
                return true
            }.future(on: loop)
        }.get()
        try await loop.submit { subscription.start() }.get()
        try await settle()
        #expect(sent.withLock { $0.count } == StreamingSubscription.maxInFlight)
        // One answer frees a slot, but the loop refills a quarter of the window at a time (one lease for many).
        let first = sent.withLock { $0[0].id }
        try await loop.submit { subscription.processed(id: first, outcome: .success) }.get()
        try await settle()
        #expect(sent.withLock { $0.count } == StreamingSubscription.maxInFlight)
        let quarter = sent.withLock { $0[1..<(StreamingSubscription.maxInFlight / 4)].map(\.id) }
        try await loop.submit { for id in quarter { subscription.processed(id: id, outcome: .success) } }.get()
        try await settle()
        #expect(sent.withLock { $0.count } == total)
        #expect(runtime.pubsub.subscriptions.count == 1)
        // The end of the stream gives the unanswered ones back at once: the app's next fetch gets them.
        try await loop.submit { subscription.stop() }.get()
        try await settle()
        #expect(runtime.pubsub.subscriptions.count == 0)
        let again = try await handle.fetch("t", limit: 1000, on: loop).get().deliveries
        #expect(again.count == total - StreamingSubscription.maxInFlight / 4, "all but the answered ones")
    }

    @Test("a subscriber that never answers does not stall its stream: slots free up as the leases end")
    func unansweredLeasesEnd() async throws {
        let configuration = NodeConfiguration(
            tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders"), AppSpec(appId: "billing")])],
            components: [
                ComponentSpec(name: "pubsub", type: "pubsub.in-memory", metadata: ["ackTimeout": "300ms"])
            ])
        let runtime = try Runtime(
            configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            threadPool: NIOThreadPool.singleton, etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Self.caller, tenant: nil)
        _ = try await handle.ensureConsumer("t", on: loop).get()
        let total = StreamingSubscription.maxInFlight + 20
        for index in 0..<total {
            let request = PublishRequest(pubsubName: "pubsub", topic: "t", data: Data("m\(index)".utf8))
            try await runtime.pubsub.publish(Self.publisher, request, on: loop).get()
        }
        let sent = Locked<[SubscriptionEvent]>([])
        let sentAt = Locked<[ContinuousClock.Instant]>([])
        let loop = self.loop
        let subscription = try await loop.flatSubmit {
            runtime.pubsub.subscribe(
                Self.caller, pubsubName: "pubsub", topic: "t", deadLetterTopic: "", logger: nil, on: loop
            ) { events in
                sent.withLock { $0.append(contentsOf: events) }
                sentAt.withLock { $0.append(contentsOf: events.map { _ in .now }) }
                return true
            }.future(on: loop)
        }.get()
        let started = ContinuousClock.now
        try await loop.submit { subscription.start() }.get()
        try await settle()
        // While the first leases hold (300 ms from the first fetch), the window bounds what is sent: whatever the
        // machine's speed, no more than maxInFlight events go out before then.
        let early = sentAt.withLock { $0.filter { $0 < started + .milliseconds(250) }.count }
        #expect(early <= StreamingSubscription.maxInFlight)
        #expect(sent.withLock { $0.count } >= StreamingSubscription.maxInFlight)
        // Nothing is answered: once the 300 ms leases end, the stream takes the rest and the redeliveries.
        let deadline = ContinuousClock.now + .seconds(10)
        while sent.withLock({ $0.count }) < total, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(sent.withLock { $0.count } >= total)
        try await loop.submit { subscription.stop() }.get()
    }
}
