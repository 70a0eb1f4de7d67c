import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import HangarRuntime
import HangarSync

/// An app channel that records the events pushed to it and answers as the test scripts it: the app side of push
/// delivery, in process (the real channels are covered by the end-to-end tests).
final class ScriptedAppChannel: AppChannel {
    /// What the app answers to one event.
    enum Answer: Sendable {
        case outcome(DeliveryOutcome)
        /// The call fails (the app answers an error status).
        case fail
        /// The call fails: nothing listens on the app's socket.
        case unreachable
        /// No answer until the test releases it.
        case hold
    }

    let events = Locked<[AppTopicEvent]>([])
    let batches = Locked<[AppBulkTopicEvent]>([])
    private let held = Locked<[EventLoopPromise<DeliveryOutcome>]>([])
    private let script: Locked<@Sendable (AppTopicEvent) -> Answer>
    let healthy = Atomic<Bool>(true)
    /// Whether the app answers at all (its subscription list, which push delivery asks to probe it).
    let listening = Atomic<Bool>(true)
    let listed = Atomic<Int>(0)

    init(_ script: @escaping @Sendable (AppTopicEvent) -> Answer = { _ in .outcome(.success) }) {
        self.script = Locked(script)
    }

    func answer(_ script: @escaping @Sendable (AppTopicEvent) -> Answer) { self.script.withLock { $0 = script } }

    var count: Int { events.withLock { $0.count } }
    var ids: [String] { events.withLock { $0.map(\.event.id) } }

    func deliver(_ event: AppTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<DeliveryOutcome>
    {
        events.withLock { $0.append(event) }
        switch script.withLock({ $0 })(event) {
        case .outcome(let outcome): return eventLoop.makeSucceededFuture(outcome)
        case .fail:
            return eventLoop.makeFailedFuture(AppChannelError.status(code: .unknown, message: "scripted failure"))
        case .unreachable:
            return eventLoop.makeFailedFuture(AppChannelError.unreachable("scripted: nothing listens"))
        case .hold:
            let promise = eventLoop.makePromise(of: DeliveryOutcome.self)
            held.withLock { $0.append(promise) }
            return promise.futureResult
        }
    }

    func deliverBulk(_ batch: AppBulkTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<[String: DeliveryOutcome]>
    {
        batches.withLock { $0.append(batch) }
        var outcomes: [String: DeliveryOutcome] = [:]
        for entry in batch.entries {
            let event = AppTopicEvent(event: entry.event, envelope: entry.envelope, metadata: entry.metadata)
            if case .outcome(let outcome) = script.withLock({ $0 })(event) { outcomes[entry.entryId] = outcome }
        }
        return eventLoop.makeSucceededFuture(outcomes)
    }

    /// Answers the first `count` held calls (all when nil).
    func release(_ outcome: DeliveryOutcome, count: Int? = nil) {
        let promises = held.withLock { held in
            let taken = Array(held.prefix(count ?? held.count))
            held.removeFirst(taken.count)
            return taken
        }
        for promise in promises { promise.succeed(outcome) }
    }

    func invoke(_ invocation: AppInvocation, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppInvocationResult>
    {
        eventLoop.makeFailedFuture(AppChannelError.invalidRequest("not an invocation test"))
    }

    func openStream(
        path: String, metadata: [(name: String, value: String)], deadline: NIODeadline?, on eventLoop: any EventLoop,
        observer: any AppStreamObserver, opened: @escaping (Result<any AppStream, AppChannelError>) -> Void
    ) {
        opened(.failure(.invalidRequest("not an invocation test")))
    }

    func listSubscriptions(deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<AppSubscriptionList> {
        listed.add(1, ordering: .relaxed)
        return listening.load(ordering: .relaxed)
            ? eventLoop.makeSucceededFuture(AppSubscriptionList())
            : eventLoop.makeFailedFuture(AppChannelError.unreachable("scripted: nothing listens"))
    }

    func checkHealth(path: String, deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        healthy.load(ordering: .relaxed)
            ? eventLoop.makeSucceededVoidFuture() : eventLoop.makeFailedFuture(AppChannelError.unreachable("down"))
    }

    func close() { release(.retry("closed")) }
}

/// Push delivery over a real in-memory component and the scripted app channel: what the app receives, how its
/// answers settle messages (ack, retry, drop, dead letter, max attempts), routing without a match, the pause while
/// the app is unhealthy, the in-flight window, and the end of a channel or a component.
@Suite("Push delivery")
struct PushDeliveryTests {
    static let orders = AppID(namespace: "team-a", appId: "orders")
    static let billing = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    static let otherOrders = AppID(namespace: "team-b", appId: "orders")
    static let otherBilling = Caller(app: AppID(namespace: "team-b", appId: "billing"), transport: .unixSocket)
    let loop = MultiThreadedEventLoopGroup.singleton.any()
    let channel = ScriptedAppChannel()
    let otherChannel = ScriptedAppChannel()
    let runtime: Runtime
    let push: PushDelivery

    static func configuration(
        channel: Bool = true, healthCheck: Bool = false, pubsub: Bool = true, metadata: [String: String] = [:]
    ) -> NodeConfiguration {
        var orders = AppSpec(appId: "orders")
        if channel {
            var check = AppChannelSpec.HealthCheck()
            check.interval = .milliseconds(20)
            check.threshold = 1
            orders.appChannel = AppChannelSpec(protocol: .grpc, healthCheck: healthCheck ? check : nil)
        }
        var otherOrders = AppSpec(appId: "orders")
        otherOrders.appChannel = AppChannelSpec(protocol: .grpc)
        return NodeConfiguration(
            tenants: [
                TenantSpec(namespace: "team-a", apps: [orders, AppSpec(appId: "billing")]),
                TenantSpec(namespace: "team-b", apps: [otherOrders, AppSpec(appId: "billing")]),
            ],
            components: pubsub ? [ComponentSpec(name: "pubsub", type: "pubsub.in-memory", metadata: metadata)] : [])
    }

    init() throws {
        let channel = self.channel
        let otherChannel = self.otherChannel
        runtime = try Runtime(
            configuration: Self.configuration(healthCheck: true), dataDirectory: "/nonexistent",
            maxRequestBytes: 1 << 20, componentRegistry: .node, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            threadPool: NIOThreadPool.singleton, etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)),
            appChannelFactory: { app, _ in app.namespace == "team-a" ? channel : otherChannel },
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        push = PushDelivery(
            pubsub: runtime.pubsub, channels: runtime.appChannels, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), retryDelay: .milliseconds(20))
    }

    static func spec(
        topic: String = "orders", path: String = "/orders", deadLetterTopic: String? = nil,
        routes: [SubscriptionRoute]? = nil, bulk: BulkSubscribeSpec? = nil, metadata: [String: String] = [:]
    ) -> SubscriptionSpec {
        SubscriptionSpec(
            origin: .programmatic, pubsubName: "pubsub", topic: topic,
            routes: routes ?? [SubscriptionRoute(path: path)], deadLetterTopic: deadLetterTopic, bulk: bulk,
            metadata: metadata)
    }

    func publish(_ text: String, topic: String = "orders", as caller: Caller = Self.billing) async throws {
        let request = PublishRequest(
            pubsubName: "pubsub", topic: topic, data: Data(text.utf8), contentType: "text/plain",
            metadata: ["custom": "value"])
        try await runtime.pubsub.publish(caller, request, on: loop).get()
    }

    /// Subscribes `app` and waits until its consumer exists (created at the end of the log).
    func subscribe(_ specs: [SubscriptionSpec], for app: AppID = Self.orders) async throws {
        push.setSubscriptions(specs, for: app)
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Caller(app: app, transport: .unixSocket), tenant: nil)
        for spec in specs { _ = try await handle.ensureConsumer(spec.topic, on: loop).get() }
        try await eventually { push.runningCount >= specs.count }
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

    /// What the app's consumer of `topic` still holds, leased by the test (the loop must be stopped first).
    func pending(_ topic: String, app: AppID = Self.orders) async throws -> [PubSubDelivery] {
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Caller(app: app, transport: .unixSocket), tenant: nil)
        return try await handle.fetch(topic, limit: 1000, on: loop).get().deliveries
    }

    /// A consumer of `topic` for `app`, created now (so that it receives what is published later).
    func consumer(_ topic: String, app: AppID = Self.orders) async throws {
        let handle = try runtime.components.scoped(
            TenantPubSubHandle.self, named: "pubsub", for: Caller(app: app, transport: .unixSocket), tenant: nil)
        _ = try await handle.ensureConsumer(topic, on: loop).get()
    }

    @Test("events arrive with the route's path, the broker metadata and pubsubName; SUCCESS acks them")
    func delivered() async throws {
        try await subscribe([Self.spec()])
        try await publish("one")
        try await publish("two")
        try await eventually { channel.count == 2 }
        let events = channel.events.withLock { $0 }
        #expect(events.map { String(decoding: $0.event.data, as: UTF8.self) } == ["one", "two"])
        #expect(events[0].event.path == "/orders" && events[0].event.topic == "orders")
        #expect(events[0].metadata["pubsubName"] == "pubsub" && events[0].metadata["custom"] == "value")
        #expect(!events[0].traceparent.isEmpty)
        let envelope = try #require(JSONSerialization.jsonObject(with: events[0].envelope) as? [String: Any])
        #expect(envelope["data"] as? String == "one" && envelope["source"] as? String == "billing")
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        #expect(try await pending("orders").isEmpty, "acknowledged")
    }

    @Test("RETRY and failed calls redeliver; after maxAttempts the message goes to the dead-letter topic")
    func retriesThenDeadLetter() async throws {
        try await consumer("orders-dlq", app: Self.billing.app)
        channel.answer { event in
            String(decoding: event.event.data, as: UTF8.self) == "fails" ? .fail : .outcome(.retry("RETRY"))
        }
        try await subscribe([Self.spec(deadLetterTopic: "orders-dlq")])
        try await publish("retried")
        try await publish("fails")
        try await eventually { channel.count == 2 * DeliveryLoop.maxAttempts }
        let texts = channel.events.withLock { $0.map { String(decoding: $0.event.data, as: UTF8.self) } }
        #expect(texts.filter { $0 == "retried" }.count == DeliveryLoop.maxAttempts)
        #expect(texts.filter { $0 == "fails" }.count == DeliveryLoop.maxAttempts)
        // Both are dead-lettered: the original bytes, published through the publish path (counted for the app).
        try await eventually {
            String(decoding: runtime.metrics.render(gauges: RuntimeGauges()), as: UTF8.self).contains(
                #"hangar_pubsub_delivered_total{namespace="team-a",app_id="orders",component="pubsub",topic="orders",outcome="deadletter"} 2"#)
        }
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        #expect(channel.count == 2 * DeliveryLoop.maxAttempts, "not delivered an 11th time")
        let dead = try await pending("orders-dlq", app: Self.billing.app)
        #expect(dead.count == 2)
        let metrics = String(decoding: runtime.metrics.render(gauges: RuntimeGauges()), as: UTF8.self)
        #expect(metrics.contains(#"hangar_pubsub_published_total{namespace="team-a",app_id="orders",component="pubsub",topic="orders-dlq"} 2"#))
        #expect(try await pending("orders").isEmpty, "the originals are acknowledged once dead-lettered")
    }

    @Test("DROP without a dead-letter topic acks; UNIMPLEMENTED drops without dead-lettering")
    func drops() async throws {
        try await consumer("dlq", app: Self.billing.app)
        channel.answer { event in
            String(decoding: event.event.data, as: UTF8.self) == "drop"
                ? .outcome(.drop("DROP")) : .outcome(.discard("UNIMPLEMENTED"))
        }
        try await subscribe([Self.spec(), Self.spec(topic: "audit", deadLetterTopic: "dlq")])
        try await publish("drop")
        try await publish("unimplemented", topic: "audit")
        try await eventually { channel.count == 2 }
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        #expect(try await pending("orders").isEmpty)
        #expect(try await pending("audit").isEmpty)
        #expect(try await pending("dlq", app: Self.billing.app).isEmpty, "UNIMPLEMENTED is never dead-lettered")
        #expect(channel.count == 2, "neither came back")
    }

    @Test("a message no route matches is acked, or dead-lettered when the subscription has a dead-letter topic")
    func noRoute() async throws {
        try await consumer("dlq", app: Self.billing.app)
        try await subscribe([Self.spec(routes: []), Self.spec(topic: "audit", deadLetterTopic: "dlq", routes: [])])
        try await publish("skipped")
        try await publish("dead", topic: "audit")
        try await eventually { (try? await pending("dlq", app: Self.billing.app).count) == 1 }
        // The skipped one is settled on its own loop: wait for it before stopping (else it is given back).
        try await eventually {
            String(decoding: runtime.metrics.render(gauges: RuntimeGauges()), as: UTF8.self).contains(
                #"hangar_pubsub_delivered_total{namespace="team-a",app_id="orders",component="pubsub",topic="orders",outcome="drop"} 1"#)
        }
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        #expect(channel.count == 0, "nothing reaches the app")
        #expect(try await pending("orders").isEmpty)
        #expect(try await pending("audit").isEmpty)
    }

    @Test("a bulk subscription gets the messages in batches, each entry settled by its own status")
    func bulk() async throws {
        channel.answer { event in
            String(decoding: event.event.data, as: UTF8.self) == "again" ? .outcome(.retry("RETRY")) : .outcome(.success)
        }
        try await consumer("orders")
        for text in ["a", "b", "again"] { try await publish(text) }
        try await subscribe([Self.spec(bulk: BulkSubscribeSpec(maxMessagesCount: 10))])
        try await eventually { channel.batches.withLock { $0.count } >= 3 }
        let first = try #require(channel.batches.withLock { $0.first })
        #expect(first.entries.count == 3 && first.path == "/orders" && first.pubsubName == "pubsub")
        // Only `again` comes back, alone in its batch.
        #expect(channel.batches.withLock { $0.dropFirst().allSatisfy { $0.entries.count == 1 } })
        push.stopAll()
    }

    @Test("a bulk batch waits up to maxAwaitDurationMs for more messages: published one by one, they go out together")
    func bulkGathers() async throws {
        // A batch goes out when it is full (3) or 60 s after its first message: the three publishes below, made
        // one after the other, must arrive as one batch (without gathering the first would go out alone).
        try await subscribe([Self.spec(bulk: BulkSubscribeSpec(maxMessagesCount: 3, maxAwaitDurationMs: 60_000))])
        for text in ["a", "b", "c"] { try await publish(text) }
        try await eventually { channel.batches.withLock { $0.count } >= 1 }
        let batches = channel.batches.withLock { $0 }
        #expect(batches.map(\.entries.count) == [3])
        #expect(batches.first?.entries.map { String(decoding: $0.event.data, as: UTF8.self) } == ["a", "b", "c"])
        push.stopAll()
    }

    @Test("a bulk batch that does not fill goes out when maxAwaitDurationMs has passed")
    func bulkFlushesAfterTheWait() async throws {
        try await subscribe([Self.spec(bulk: BulkSubscribeSpec(maxMessagesCount: 100, maxAwaitDurationMs: 200))])
        try await publish("alone")
        try await eventually { channel.batches.withLock { $0.count } == 1 }
        #expect(channel.batches.withLock { $0.first?.entries.count } == 1)
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        #expect(try await pending("orders").isEmpty, "acknowledged")
    }

    @Test("nothing is delivered while the app is unhealthy; what waited arrives when it is healthy again")
    func unhealthyPause() async throws {
        let watching = Task { await runtime.appChannels.watchHealth(on: MultiThreadedEventLoopGroup.singleton) }
        defer { watching.cancel() }
        try await subscribe([Self.spec()])
        channel.healthy.store(false, ordering: .relaxed)
        try await eventually { runtime.appChannels.isHealthy(Self.orders) == false }
        // The health change reaches the subscription's loop on its event loop, after the channel reports it.
        let subscription = try #require(push.subscription(Self.orders, pubsubName: "pubsub", topic: "orders"))
        try await eventually { (try? await subscription.isPaused().get()) == true }
        try await publish("while down")
        try await Task.sleep(for: .milliseconds(200))
        #expect(channel.count == 0)
        channel.healthy.store(true, ordering: .relaxed)
        try await eventually { channel.count == 1 }
        push.stopAll()
    }

    @Test("an unreachable app pauses its subscriptions (no attempts spent) until a probe finds it; then it gets all")
    func unreachablePause() async throws {
        try await subscribe([Self.spec()])
        channel.listening.store(false, ordering: .relaxed)
        channel.answer { _ in .unreachable }
        for index in 0..<5 { try await publish("while away \(index)") }
        // The first delivery finds nothing listening; the others wait, and probes follow.
        try await eventually { channel.listed.load(ordering: .relaxed) >= 2 }
        let spent = channel.count
        #expect(spent <= 5, "at most the batch in flight when the app was found gone")
        try await Task.sleep(for: .milliseconds(300))
        #expect(channel.count == spent, "nothing more is delivered while the app is unreachable")
        channel.answer { _ in .outcome(.success) }
        channel.listening.store(true, ordering: .relaxed)
        try await eventually {
            Set(channel.events.withLock { $0.dropFirst(spent).map { String(decoding: $0.event.data, as: UTF8.self) } })
                .count == 5
        }
        push.stopAll()
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        let left = try await pending("orders")
        #expect(left.isEmpty, "all acknowledged: \(left.map { ($0.sequence, $0.attempt) }) \(channel.count)")
    }

    @Test("the consumer lag gauge counts what waits for an app that is paused, and drops to 0 once it is delivered")
    func consumerLag() async throws {
        let watching = Task { await runtime.appChannels.watchHealth(on: MultiThreadedEventLoopGroup.singleton) }
        defer { watching.cancel() }
        try await subscribe([Self.spec()])
        let series = #"hangar_pubsub_consumer_lag{namespace="team-a",app_id="orders",component="pubsub",topic="orders"}"#
        func metrics() -> String { String(decoding: runtime.metrics.render(gauges: RuntimeGauges()), as: UTF8.self) }
        try await eventually { metrics().contains(series + " 0") }
        channel.healthy.store(false, ordering: .relaxed)
        try await eventually { runtime.appChannels.isHealthy(Self.orders) == false }
        for index in 0..<3 { try await publish("waiting \(index)") }
        #expect(metrics().contains(series + " 3"))
        channel.healthy.store(true, ordering: .relaxed)
        try await eventually { channel.count == 3 }
        try await eventually { metrics().contains(series + " 0") }
        push.stopAll()
    }

    @Test("at most `window` events are unanswered per subscription; answers make room a quarter at a time")
    func window() async throws {
        channel.answer { _ in .hold }
        try await consumer("orders")
        let total = PushDelivery.window + 20
        for index in 0..<total { try await publish("m\(index)") }
        try await subscribe([Self.spec()])
        try await eventually { channel.count == PushDelivery.window }
        let subscription = try #require(push.subscription(Self.orders, pubsubName: "pubsub", topic: "orders"))
        #expect(try await subscription.inFlight().get() == PushDelivery.window)
        // Slots are refilled a quarter of the window at a time: 24 answers lease nothing, the 25th the rest.
        channel.release(.success, count: PushDelivery.window / 4 - 1)
        let left = PushDelivery.window - PushDelivery.window / 4 + 1
        try await eventually { (try? await subscription.inFlight().get()) == left }
        #expect(channel.count == PushDelivery.window)
        channel.release(.success, count: 1)
        try await eventually { channel.count == total }
        channel.release(.success)
        push.stopAll()
    }

    @Test("a removed channel stops its app's deliveries and gives messages back; a new one starts them again")
    func channelRemoved() async throws {
        channel.answer { _ in .hold }
        try await subscribe([Self.spec()])
        try await publish("held")
        try await eventually { channel.count == 1 }
        _ = try runtime.apply(Self.configuration(channel: false))
        try await eventually { push.runningCount == 0 }
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        channel.answer { _ in .outcome(.success) }
        _ = try runtime.apply(Self.configuration())
        try await eventually { push.runningCount == 1 }
        // Given back at the removal (its late answer is ignored), delivered again.
        try await eventually { channel.count == 2 }
        #expect(Set(channel.ids).count == 1)
        push.stopAll()
    }

    @Test("another tenant's subscriber of the same topic on the same component never gets these events")
    func tenants() async throws {
        try await subscribe([Self.spec()])
        try await subscribe([Self.spec()], for: Self.otherOrders)
        try await publish("for team-a")
        try await publish("for team-b", as: Self.otherBilling)
        try await eventually { channel.count == 1 && otherChannel.count == 1 }
        #expect(channel.events.withLock { String(decoding: $0[0].event.data, as: UTF8.self) } == "for team-a")
        #expect(otherChannel.events.withLock { String(decoding: $0[0].event.data, as: UTF8.self) } == "for team-b")
        push.stopAll()
    }

    @Test("a subscription with a forbidden topic or dead-letter topic is refused and not started")
    func refused() async throws {
        _ = try runtime.apply(
            Self.configuration(
                healthCheck: true,
                metadata: ["publishingScopes": "orders=orders", "subscriptionScopes": "orders=orders,audit"]))
        push.setSubscriptions(
            [Self.spec(deadLetterTopic: "dlq"), Self.spec(topic: "secret"), Self.spec(topic: "audit")], for: Self.orders)
        try await eventually { runtime.pubsub.subscriptions.count == 1 }
        try await Task.sleep(for: .milliseconds(100))
        #expect(runtime.pubsub.subscriptions.count == 1, "only audit runs")
        // A stream is refused at once, with the error a publish to its dead-letter topic would get.
        let (node, loop) = (self.runtime, self.loop)
        let refusal = await #expect(throws: APIError.self) {
            try await loop.flatSubmit {
                node.pubsub.subscribe(
                    Caller(app: Self.orders, transport: .unixSocket), pubsubName: "pubsub", topic: "orders",
                    deadLetterTopic: "dlq", logger: nil, on: loop
                ) { _ in true }.future(on: loop)
            }.get()
        }
        #expect(refusal?.errorCode == "ERR_PUBSUB_FORBIDDEN")
        push.stopAll()
    }

    @Test("a retired component ends a stream with UNAVAILABLE and stops push delivery")
    func componentRetired() async throws {
        try await subscribe([Self.spec()])
        let ended = Locked<APIError?>(nil)
        let (node, loop) = (self.runtime, self.loop)
        let stream = try await loop.flatSubmit {
            node.pubsub.subscribe(
                Caller(app: Self.orders, transport: .unixSocket), pubsubName: "pubsub", topic: "t",
                deadLetterTopic: "", logger: nil, on: loop, send: { _ in true },
                ended: { error in ended.withLock { $0 = error } }
            ).future(on: loop)
        }.get()
        try await loop.submit { stream.start() }.get()
        try await eventually { runtime.pubsub.subscriptions.count == 2 }
        _ = try runtime.apply(Self.configuration(healthCheck: true, pubsub: false))
        try await eventually { ended.withLock { $0 } != nil }
        #expect(ended.withLock { $0?.rpcCode } == .unavailable)
        try await eventually { runtime.pubsub.subscriptions.count == 0 }
        try await loop.submit { stream.stop() }.get()
        push.stopAll()
    }
}
