import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime

/// The publishing half of the pub/sub block over real in-memory components: Dapr's validation order and errors,
/// the tenant's topic scope (partitioning, topic scopes metadata), `maxPubsubBytes`, and what is stored.
@Suite("Pub/sub API")
struct PubSubAPITests {
    static let group = MultiThreadedEventLoopGroup.singleton
    let loop = PubSubAPITests.group.any()
    let runtime: Runtime

    static let ordersA = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)
    static let billingA = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    static let ordersB = Caller(app: AppID(namespace: "team-b", appId: "orders"), transport: .unixSocket)
    static let lonely = Caller(app: AppID(namespace: "team-c", appId: "lonely"), transport: .unixSocket)

    init() throws {
        let configuration = NodeConfiguration(
            tenants: [
                TenantSpec(
                    namespace: "team-a", apps: [AppSpec(appId: "orders"), AppSpec(appId: "billing")],
                    quotas: Quotas(maxPubsubBytes: 4096)),
                TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders")]),
                TenantSpec(namespace: "team-c", apps: [AppSpec(appId: "lonely")]),
            ],
            components: [
                ComponentSpec(name: "pubsub", type: "pubsub.in-memory", scopes: ["orders", "billing"]),
                ComponentSpec(
                    name: "scoped", type: "pubsub.in-memory",
                    metadata: [
                        "allowedTopics": "orders, audit,secret", "publishingScopes": "billing=audit,secret;orders=",
                        "protectedTopics": "secret", "consumerID": "{namespace}",
                    ], scopes: ["orders", "billing"]),
                ComponentSpec(name: "local", namespace: "team-b", type: "pubsub.in-memory"),
                ComponentSpec(
                    name: "small", type: "pubsub.in-memory", metadata: ["maxRetainedBytes": "1024"],
                    scopes: ["orders"]),
                // Commits on the thread pool, later than the publish call returns: concurrent publishes meet there.
                ComponentSpec(
                    name: "durable", type: "pubsub.sqlite", metadata: ["connectionString": ":memory:"],
                    scopes: ["orders"]),
            ])
        runtime = try Runtime(
            configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: Self.group, threadPool: NIOThreadPool.singleton,
            etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func publish(
        _ caller: Caller, _ pubsub: String = "pubsub", _ topic: String = "orders", _ data: String = "hello",
        contentType: String = "", metadata: [String: String] = [:]
    ) async throws {
        let request = PublishRequest(
            pubsubName: pubsub, topic: topic, data: Data(data.utf8), contentType: contentType, metadata: metadata)
        try await runtime.pubsub.publish(caller, request, on: loop).get()
    }

    func handle(_ caller: Caller, _ pubsub: String = "pubsub") throws -> TenantPubSubHandle {
        try runtime.components.scoped(TenantPubSubHandle.self, named: pubsub, for: caller, tenant: nil)
    }

    /// Everything published to `topic` since the caller's consumer was created, as the caller's handle fetches it.
    func fetch(_ caller: Caller, _ topic: String, _ pubsub: String = "pubsub") async throws -> [PubSubDelivery] {
        try await handle(caller, pubsub).fetch(topic, limit: 100, on: loop).get().deliveries
    }

    func error(_ body: () async throws -> Void) async -> APIError? {
        do {
            try await body()
            return nil
        } catch {
            return error as? APIError
        }
    }

    @Test("a publish is stored as a CloudEvent on the tenant's own topic")
    func storedEnvelope() async throws {
        _ = try await handle(Self.ordersA).ensureConsumer("orders", on: loop).get()
        try await publish(Self.ordersA, metadata: ["partitionKey": "p1"])
        let deliveries = try await fetch(Self.ordersA, "orders")
        let message = try #require(deliveries.first?.message)
        #expect(deliveries.count == 1)
        #expect(message.contentType == "application/cloudevents+json")
        #expect(message.metadata == ["partitionKey": "p1"])
        let event = try #require(JSONSerialization.jsonObject(with: message.data) as? [String: Any])
        #expect(event["source"] as? String == "orders")
        #expect(event["topic"] as? String == "orders")
        #expect(event["data"] as? String == "hello")
        #expect((event["traceparent"] as? String)?.hasPrefix("00-") == true)
        #expect(try handle(Self.ordersA).pubsub.usageByTopic.keys.contains("team-a||orders"))
    }

    @Test("the same topic name in two tenants is two topics; each tenant fetches only its own")
    func tenantsArePartitioned() async throws {
        _ = try await handle(Self.ordersA).ensureConsumer("shared-name", on: loop).get()
        _ = try await handle(Self.ordersB).ensureConsumer("shared-name", on: loop).get()
        try await publish(Self.ordersA, "pubsub", "shared-name", "from a")
        try await publish(Self.ordersB, "pubsub", "shared-name", "from b")
        let a = try await fetch(Self.ordersA, "shared-name")
        let b = try await fetch(Self.ordersB, "shared-name")
        #expect(a.count == 1 && b.count == 1)
        #expect(String(decoding: a[0].message.data, as: UTF8.self).contains("from a"))
        #expect(String(decoding: b[0].message.data, as: UTF8.self).contains("from b"))
        let usage = try handle(Self.ordersA).pubsub.usageByTopic
        #expect(usage.keys.contains("team-a||shared-name") && usage.keys.contains("team-b||shared-name"))
        #expect(try handle(Self.ordersA).consumer("t").group == "team-a||orders")
    }

    @Test("rawPayload stores the bytes as they are, with the request's content type")
    func rawPayload() async throws {
        _ = try await handle(Self.ordersA).ensureConsumer("raw", on: loop).get()
        try await publish(
            Self.ordersA, "pubsub", "raw", "{not an envelope", contentType: "x/y", metadata: ["rawPayload": "True"])
        let message = try #require(try await fetch(Self.ordersA, "raw").first?.message)
        #expect(String(decoding: message.data, as: UTF8.self) == "{not an envelope")
        #expect(message.contentType == "x/y")
    }

    @Test("a TTL goes to the component, which expires messages itself (no expiration in the envelope)")
    func ttlToComponent() async throws {
        _ = try await handle(Self.ordersA).ensureConsumer("ttl", on: loop).get()
        try await publish(Self.ordersA, "pubsub", "ttl", metadata: ["TTLInSeconds": "30"])
        let delivery = try #require(try await fetch(Self.ordersA, "ttl").first)
        #expect(delivery.message.ttl == .seconds(30))
        let event = try #require(JSONSerialization.jsonObject(with: delivery.message.data) as? [String: Any])
        #expect(event["expiration"] == nil)
    }

    @Test(
        "Dapr's validation order and errors",
        arguments: [
            ("", "t", "ERR_PUBSUB_EMPTY", RPCCode.invalidArgument, 404),
            ("nope", "t", "ERR_PUBSUB_NOT_FOUND", .invalidArgument, 404),
            ("local", "t", "ERR_PUBSUB_NOT_FOUND", .invalidArgument, 404),
            ("pubsub", "", "ERR_TOPIC_NAME_EMPTY", .invalidArgument, 404),
        ])
    func validation(_ pubsub: String, _ topic: String, _ code: String, _ rpc: RPCCode, _ status: Int) async {
        let error = await error { try await publish(Self.ordersA, pubsub, topic, metadata: ["rawPayload": "bad"]) }
        #expect(error?.errorCode == code)
        #expect(error?.rpcCode == rpc)
        #expect(error?.httpStatus == status)
    }

    @Test("messages are Dapr's")
    func messages() async {
        #expect(await error { try await publish(Self.ordersA, "nope") }?.message == "pubsub nope is not found")
        #expect(
            await error { try await publish(Self.ordersA, "pubsub", "") }?.message == "topic is empty in pubsub pubsub")
        #expect(await error { try await publish(Self.ordersA, "") }?.message == "pubsub name is empty")
    }

    @Test("an app with no pub/sub component at all: not configured, even with an empty name")
    func notConfigured() async {
        for name in ["", "pubsub"] {
            let error = await error { try await publish(Self.lonely, name) }
            #expect(error?.errorCode == "ERR_PUBSUB_NOT_CONFIGURED")
            #expect(error?.rpcCode == .failedPrecondition)
            #expect(error?.message == "pubsub \(name) is not configured")
        }
    }

    @Test("bad metadata: rawPayload is a Go boolean, the TTL positive")
    func badMetadata() async {
        for metadata in [["rawPayload": "yes"], ["ttlInSeconds": "0"], ["ttl": "soon"], ["ttlInSeconds": "-1"]] {
            let error = await error { try await publish(Self.ordersA, metadata: metadata) }
            #expect(error?.errorCode == "ERR_PUBSUB_REQUEST_METADATA", "\(metadata)")
            #expect(error?.rpcCode == .invalidArgument)
        }
        let raw = await error { try await publish(Self.ordersA, metadata: ["rawPayload": "yes"]) }
        #expect(
            raw?.message
                == "failed deserializing metadata. Error: rawPayload value must be a valid boolean: actual is 'yes'")
    }

    @Test("an invalid CloudEvent is ERR_PUBSUB_CLOUD_EVENTS_SER")
    func invalidCloudEvent() async {
        let error = await error {
            try await publish(Self.ordersA, "pubsub", "orders", "[1]", contentType: "application/cloudevents+json")
        }
        #expect(error?.errorCode == "ERR_PUBSUB_CLOUD_EVENTS_SER")
        #expect(error?.rpcCode == .invalidArgument)
        #expect(error?.httpStatus == 500)
        #expect(error?.message == "cannot create cloudevent")
    }

    @Test(
        "hostile topic names are refused with INVALID_ARGUMENT",
        arguments: [
            "../x", "a||b", "a/./b", "..", String(repeating: "t", count: 10_240), "a\u{0}b", "line\nbreak", "del\u{7F}",
        ])
    func hostileTopics(_ topic: String) async {
        let error = await error { try await publish(Self.ordersA, "pubsub", topic) }
        #expect(error?.rpcCode == .invalidArgument)
        #expect(error?.httpStatus == 400)
        #expect(error?.reason == "HANGAR_PUBSUB_TOPIC_INVALID")
        #expect((error?.message.utf8.count ?? 0) < 400)
        #expect(error?.message.contains("\n") == false)
    }

    @Test(
        "topics may contain slashes, dots and any printable characters",
        arguments: ["a/b/c", "orders.v1", "ünï", "a|b"])
    func acceptedTopics(_ topic: String) async throws {
        try await publish(Self.ordersA, "pubsub", topic)
    }

    @Test("topic scopes within the tenant: allowedTopics, publishingScopes, protectedTopics")
    func topicScopes() async throws {
        // orders is listed with no topics: it may publish none.
        let denied = await error { try await publish(Self.ordersA, "scoped", "orders") }
        #expect(denied?.errorCode == "ERR_PUBSUB_FORBIDDEN")
        #expect(denied?.rpcCode == .permissionDenied)
        #expect(denied?.httpStatus == 403)
        #expect(denied?.message == "topic orders is not allowed for app id orders")
        // billing's scope lists the protected topic.
        try await publish(Self.billingA, "scoped", "secret")
        try await publish(Self.billingA, "scoped", "audit")
        // Not in allowedTopics: nobody.
        #expect(
            await error { try await publish(Self.billingA, "scoped", "other") }?.errorCode == "ERR_PUBSUB_FORBIDDEN")
        // team-b's orders is the same app id in another tenant: the scopes name app ids, so the same rules.
        #expect(await error { try await publish(Self.ordersB, "scoped", "audit") }?.errorCode == "ERR_PUBSUB_FORBIDDEN")
    }

    @Test("the policy as Dapr reads it")
    func policy() throws {
        let policy = try PubSubTopicPolicy(
            metadata: ["PROTECTEDTOPICS": "p", "subscriptionScopes": "a=x;b=;a=p;junk", "consumerID": "{appID}-g"],
            source: "f.yaml")
        #expect(policy.maySubscribe("x", app: "a") && policy.maySubscribe("p", app: "a"))
        #expect(!policy.maySubscribe("x", app: "b"))
        #expect(policy.maySubscribe("x", app: "c"))
        #expect(!policy.maySubscribe("p", app: "c"))
        #expect(policy.mayPublish("anything", app: "a"))
        #expect(!policy.mayPublish("p", app: "a"))
        #expect(policy.consumerGroup(for: AppID(namespace: "n", appId: "a")) == "a-g")
        let namespaced = try PubSubTopicPolicy(metadata: ["consumerID": "{namespace}"], source: "f.yaml")
        #expect(namespaced.consumerGroup(for: AppID(namespace: "n", appId: "a")) == "n.a")
        #expect(throws: ConfigurationError.self) {
            try PubSubTopicPolicy(metadata: ["consumerID": "{uuid}"], source: "f.yaml")
        }
    }

    @Test("maxPubsubBytes: a tenant over its retained bytes is refused; another tenant is not affected")
    func maxPubsubBytes() async throws {
        // Subscribed topics: the messages are retained until consumed (a topic nobody subscribes to is trimmed).
        for topic in ["quota", "quota-other-topic"] {
            _ = try await handle(Self.ordersA).ensureConsumer(topic, on: loop).get()
        }
        _ = try await handle(Self.ordersB).ensureConsumer("quota", on: loop).get()
        let big = String(repeating: "x", count: 1500)
        try await publish(Self.ordersA, "pubsub", "quota", big)
        try await publish(Self.ordersA, "pubsub", "quota", big)
        let refused = await error { try await publish(Self.ordersA, "pubsub", "quota-other-topic", big) }
        #expect(refused?.errorCode == "ERR_QUOTA_EXCEEDED")
        #expect(refused?.rpcCode == .resourceExhausted)
        #expect(refused?.httpStatus == 429)
        #expect(refused?.errorMetadata["quota"] == "maxPubsubBytes")
        #expect(refused?.errorMetadata["limit"] == "4096")
        // team-b has the default quota: the same publishes go through.
        for _ in 0..<3 { try await publish(Self.ordersB, "pubsub", "quota", big) }
        let perTenant = TenantPubSubHandle.usageByPartition(of: try handle(Self.ordersA).pubsub)
        #expect((perTenant["team-a"] ?? 0) > 3000 && (perTenant["team-a"] ?? 0) <= 4096)
        #expect((perTenant["team-b"] ?? 0) > 4500)
    }

    @Test("a full component is RESOURCE_EXHAUSTED / 429 ERR_PUBSUB_PUBLISH_MESSAGE; one too large ever to fit, 413")
    func fullComponent() async throws {
        let tooLarge = await error {
            try await publish(Self.ordersB, "small", "t", String(repeating: "x", count: 2048))
        }
        #expect(tooLarge?.errorCode == "ERR_PUBSUB_PUBLISH_MESSAGE")
        #expect(tooLarge?.rpcCode == .resourceExhausted)
        #expect(tooLarge?.httpStatus == 413)
        #expect(tooLarge?.message.hasPrefix("error when publishing to topic t in pubsub small: ") == true)
        #expect(tooLarge?.message.contains("maxRetainedBytes of 1024: it can never be stored") == true)
        #expect(tooLarge?.errorMetadata["retryAfterSeconds"] == nil)

        _ = try await handle(Self.ordersB, "small").ensureConsumer("t", on: loop).get()
        try await publish(Self.ordersB, "small", "t", String(repeating: "x", count: 200))
        let full = await error { try await publish(Self.ordersB, "small", "t", String(repeating: "x", count: 200)) }
        #expect(full?.errorCode == "ERR_PUBSUB_PUBLISH_MESSAGE")
        #expect(full?.httpStatus == 429)
        #expect(full?.errorMetadata["retryAfterSeconds"] == "1")
    }

    @Test("a backend that cannot be reached is UNAVAILABLE / 500 ERR_PUBSUB_PUBLISH_MESSAGE, with its reason")
    func unreachableBackend() {
        let error = PubSubAPIError.publish(
            PubSubError.unavailable("pubsub.redis: Redis at 127.0.0.1:6379 cannot be reached"), pubsub: "redis",
            topic: "t")
        #expect(error.errorCode == "ERR_PUBSUB_PUBLISH_MESSAGE")
        #expect(error.rpcCode == .unavailable)
        #expect(error.httpStatus == 500)
        #expect(error.message.contains("cannot be reached"))
        #expect(error.errorMetadata["retryAfterSeconds"] == nil)
    }

    @Test("maxPubsubBytes holds when a tenant's publishes run concurrently on a component that commits later")
    func maxPubsubBytesUnderConcurrency() async throws {
        await runtime.components.initialise()
        _ = try await handle(Self.ordersA, "durable").ensureConsumer("burst", on: loop).get()
        let payload = String(repeating: "x", count: 1500)
        let request = PublishRequest(pubsubName: "durable", topic: "burst", data: Data(payload.utf8))
        // Fired together: none has committed when the others are checked, so a check against committed usage
        // alone would let all of them through.
        let futures = (0..<12).map { _ in runtime.pubsub.publish(Self.ordersA, request, on: loop).future(on: loop) }
        var accepted = 0
        for future in futures {
            do {
                try await future.get()
                accepted += 1
            } catch let error as APIError {
                #expect(error.errorCode == "ERR_QUOTA_EXCEEDED" && error.errorMetadata["quota"] == "maxPubsubBytes")
            }
        }
        let retained = try handle(Self.ordersA, "durable").retainedBytes
        #expect(accepted == 2, "each envelope is over 1500 bytes: two fit in 4096, three do not")
        #expect(retained <= 4096 && retained > 3000)
        let perTenant = TenantPubSubHandle.usageByPartition(of: try handle(Self.ordersA, "durable").pubsub)
        #expect(perTenant == ["team-a": retained])
    }

    @Test("bulk: entries are wrapped one by one and published together; ids must be present and unique")
    func bulk() async throws {
        _ = try await handle(Self.ordersA).ensureConsumer("bulk", on: loop).get()
        let entries = [
            BulkPublishEntry(entryId: "1", event: Data(#"{"n":1}"#.utf8), contentType: "application/json"),
            BulkPublishEntry(
                entryId: "2", event: Data("two".utf8), contentType: "text/plain", metadata: ["cloudevent.id": "two"]),
        ]
        try await runtime.pubsub.bulkPublish(
            Self.ordersA, pubsubName: "pubsub", topic: "bulk", entries: entries, metadata: ["m": "request"],
            trace: PublishTrace(), on: loop
        ).get()
        let deliveries = try await fetch(Self.ordersA, "bulk")
        #expect(deliveries.count == 2)
        let events = try deliveries.map {
            try #require(JSONSerialization.jsonObject(with: $0.message.data) as? [String: Any])
        }
        #expect((events[0]["data"] as? [String: Any])?["n"] as? Int == 1)
        #expect(events[1]["id"] as? String == "two")
        // Request metadata merges under an entry's own only when it has some.
        #expect(deliveries[0].message.metadata == ["m": "request"])
        #expect(deliveries[1].message.metadata == ["m": "request", "cloudevent.id": "two"])
        // Each entry has its own span of the same trace.
        let traces = events.compactMap { $0["traceparent"] as? String }.map { $0.split(separator: "-") }
        #expect(traces.count == 2 && traces[0][1] == traces[1][1] && traces[0][2] != traces[1][2])

        for ids in [["a", "a"], ["a", ""]] {
            let error = await error {
                try await runtime.pubsub.bulkPublish(
                    Self.ordersA, pubsubName: "pubsub", topic: "bulk",
                    entries: ids.map { BulkPublishEntry(entryId: $0, event: Data(), contentType: "text/plain") },
                    metadata: [:], trace: PublishTrace(), on: loop
                ).get()
            }
            #expect(error?.errorCode == "ERR_PUBSUB_EVENTS_SER")
            #expect(error?.reason == "DAPR_PUBSUB_MARSHAL_EVENTS")
        }
        #expect(try await fetch(Self.ordersA, "bulk").isEmpty)
    }

    @Test("bulk: a component failure names every entry")
    func bulkFailure() async throws {
        let entries = (1...3).map {
            BulkPublishEntry(entryId: "e\($0)", event: Data(repeating: 0x41, count: 500), contentType: "text/plain")
        }
        do {
            try await runtime.pubsub.bulkPublish(
                Self.ordersB, pubsubName: "small", topic: "t", entries: entries, metadata: [:],
                trace: PublishTrace(), on: loop
            ).get()
            Issue.record("the publish succeeded")
        } catch let failure as BulkPublishFailure {
            #expect(failure.errorCode == "ERR_PUBSUB_PUBLISH_MESSAGE")
            #expect(failure.failedEntries.map(\.entryId) == ["e1", "e2", "e3"])
        }
    }

    @Test("grpc-trace-bin decodes to a traceparent; a publish continues the caller's trace")
    func trace() throws {
        var bytes: [UInt8] =
            [0, 0] + Array(repeating: 0xAB, count: 16) + [1] + Array(repeating: 0xCD, count: 8) + [2, 1]
        let header = Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
        #expect(
            PublishTrace.traceparent(fromGRPCTraceBin: header)
                == "00-\(String(repeating: "ab", count: 16))-\(String(repeating: "cd", count: 8))-01")
        bytes[18] = 7
        #expect(PublishTrace.traceparent(fromGRPCTraceBin: Data(bytes).base64EncodedString()) == nil)
        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let span = PublishTrace(incoming: incoming, incomingState: "a=b").span()
        #expect(span.traceparent.hasPrefix("00-0af7651916cd43dd8448eb211c80319c-"))
        #expect(span.traceparent != incoming)
        #expect(span.tracestate == "a=b")
        let fresh = PublishTrace(incoming: "garbage", incomingState: "a=b").span()
        #expect(fresh.tracestate == "")
        #expect(fresh.traceparent.split(separator: "-").count == 4)
    }
}
