import Testing

@testable import HangarRuntime

@Suite("Programmatic subscription lists (GET /dapr/subscribe, ListTopicSubscriptions)")
struct AppSubscriptionListTests {
    func http(_ body: String, status: Int = 200) throws -> AppSubscriptionList {
        try AppSubscriptionList.http(status: status, body: Array(body.utf8))
    }

    @Test("the SDK's FastAPI answer: route becomes the default route, metadata and dead letter kept")
    func fastAPI() throws {
        let list = try http(
            #"[{"pubsubname": "pubsub", "topic": "orders", "route": "/events/pubsub/orders", "metadata": {"rawPayload": "true"}, "deadLetterTopic": "dlq"}]"#
        )
        #expect(list.problems.isEmpty)
        #expect(
            list.subscriptions == [
                SubscriptionSpec(
                    origin: .programmatic, pubsubName: "pubsub", topic: "orders",
                    routes: [SubscriptionRoute(path: "/events/pubsub/orders")], deadLetterTopic: "dlq",
                    metadata: ["rawPayload": "true"])
            ])
    }

    @Test("routes: rules in order, then routes.default, which takes precedence over route; bulk settings")
    func routes() throws {
        let list = try http(
            #"""
            [{"pubsubname": "p", "topic": "t", "route": "/old",
              "routes": {"rules": [{"match": "event.type == \"a\"", "path": "/a"}, {"match": " ", "path": "/any"}],
                         "default": "/b"},
              "bulkSubscribe": {"enabled": true, "maxMessagesCount": 7}}]
            """#)
        let spec = try #require(list.subscriptions.first)
        #expect(spec.routes.map(\.path) == ["/a", "/any", "/b"])
        #expect(spec.routes.map { $0.match?.expression } == [#"event.type == "a""#, nil, nil])
        #expect(spec.bulk == BulkSubscribeSpec(maxMessagesCount: 7, maxAwaitDurationMs: 1000))
        let fallback = try http(#"[{"pubsubname": "p", "topic": "t", "route": "/old", "routes": {"rules": []}}]"#)
        #expect(fallback.subscriptions.first?.routes == [SubscriptionRoute(path: "/old")])
    }

    @Test("keys match case-insensitively, as Go's JSON decoder matches them")
    func caseInsensitive() throws {
        let list = try http(
            #"[{"PubSubName": "p", "TOPIC": "t", "Routes": {"Default": "/d"}, "deadlettertopic": "x"}]"#)
        #expect(list.subscriptions.map(\.pubsubName) == ["p"])
        #expect(list.subscriptions.map(\.topic) == ["t"])
        #expect(list.subscriptions.first?.routes == [SubscriptionRoute(path: "/d")])
        #expect(list.subscriptions.first?.deadLetterTopic == "x")
    }

    @Test("an entry without any route is removed with a warning; one without topic or with a bad match too")
    func removed() throws {
        let list = try http(
            #"""
            [{"pubsubname": "p", "topic": "none"},
             {"pubsubname": "p", "topic": "ok", "route": "/ok"},
             {"pubsubname": "", "topic": "t", "route": "/x"},
             {"pubsubname": "p", "topic": "bad", "routes": {"rules": [{"match": "event.a +", "path": "/x"}]}}]
            """#)
        #expect(list.subscriptions.map(\.topic) == ["ok"])
        #expect(list.problems.count == 3)
        #expect(list.problems[0].contains("'p/none'") && list.problems[0].contains("no route"))
        #expect(list.problems[2].contains("arithmetic"))
    }

    @Test("an empty body or null is no subscriptions; 404 is none; another status is none, with a problem")
    func statuses() throws {
        #expect(try http("") == AppSubscriptionList())
        #expect(try http(" \n") == AppSubscriptionList())
        #expect(try http("null") == AppSubscriptionList())
        #expect(try http("[]") == AppSubscriptionList())
        #expect(try http("not json", status: 404) == AppSubscriptionList())
        let failed = try http("[]", status: 500)
        #expect(failed.subscriptions.isEmpty)
        #expect(failed.problems == ["GET /dapr/subscribe answered HTTP 500; taken as no subscriptions"])
    }

    @Test(
        "a 200 body that is not what Dapr reads is an error (the fetch is retried)",
        arguments: [
            ("{not json", "not JSON"),
            (#"{"pubsubname": "p"}"#, "not a JSON array"),
            (#"["x"]"#, "[0] is not a JSON object"),
            (#"[{"pubsubname": 5, "topic": "t"}]"#, "pubsubname is not a string"),
            (#"[{"pubsubname": "p", "topic": "t", "metadata": {"a": 1}}]"#, "metadata.a is not a string"),
            (#"[{"pubsubname": "p", "topic": "t", "routes": {"rules": {}}}]"#, "rules is not an array"),
            (#"[{"pubsubname": "p", "topic": "t", "bulkSubscribe": {"enabled": "yes"}}]"#, "enabled is not a boolean"),
            (#"[{"pubsubname": "p", "topic": "t", "bulkSubscribe": {"maxMessagesCount": 1.5}}]"#, "32-bit integer"),
        ])
    func unreadable(body: String, message: String) {
        #expect {
            _ = try http(body)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("a gRPC entry without routes gets one rule with path \"\" (plain subscriptions always deliver)")
    func grpcPlain() {
        let list = AppSubscriptionList(
            entries: [
                .init(pubsubName: "p", topic: "plain"),
                .init(pubsubName: "p", topic: "ruled", rules: [(#"event.type == "a""#, "handler_a")]),
                .init(pubsubName: "p", topic: "bulk", bulk: (true, 0, 250)),
                .init(pubsubName: "p", topic: "off", bulk: (false, 10, 10)),
            ], withoutRoutes: .plainRule)
        #expect(list.problems.isEmpty)
        #expect(list.subscriptions.map(\.routes.count) == [1, 1, 1, 1])
        #expect(list.subscriptions[0].routes == [SubscriptionRoute(path: "")])
        #expect(list.subscriptions[1].routes.first?.path == "handler_a")
        #expect(list.subscriptions[1].routes.first?.match != nil)
        #expect(list.subscriptions[2].bulk == BulkSubscribeSpec(maxMessagesCount: 100, maxAwaitDurationMs: 250))
        #expect(list.subscriptions[3].bulk == nil)
    }
}
