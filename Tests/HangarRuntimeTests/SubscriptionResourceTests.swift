import Foundation
import HangarComponents
import Testing

@testable import HangarRuntime

@Suite("Subscription resources")
struct SubscriptionResourceTests {
    /// Loads a configuration from these resource files (`ResourceFixture`).
    func load(_ files: [String: String]) throws -> NodeConfiguration { try ResourceFixture.load(files) }

    let teamAOrders = AppID(namespace: "team-a", appId: "orders")
    let teamABilling = AppID(namespace: "team-a", appId: "billing")
    let teamBOrders = AppID(namespace: "team-b", appId: "orders")

    @Test("a v2alpha1 Subscription is read whole: rules in order then the default, dead letters, bulk, metadata")
    func v2() throws {
        let configuration = try load([
            "sub.yaml": """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: orders-sub}
            spec:
              pubsubname: pubsub
              topic: orders
              routes:
                rules:
                - match: event.type == "widget"
                  path: /widgets
                - match: ''
                  path: /anything
                default: /orders
              deadLetterTopic: orders-dlq
              bulkSubscribe: {enabled: true, maxMessagesCount: 50}
              metadata: {rawPayload: true, other: x}
            """
        ])
        let resource = try #require(configuration.subscriptions.first)
        #expect(resource.error == nil)
        let spec = try #require(resource.spec)
        #expect(spec.pubsubName == "pubsub")
        #expect(spec.topic == "orders")
        #expect(spec.routes.map(\.path) == ["/widgets", "/anything", "/orders"])
        #expect(spec.routes.map { $0.match?.expression } == ["event.type == \"widget\"", nil, nil])
        #expect(spec.deadLetterTopic == "orders-dlq")
        #expect(spec.bulk == BulkSubscribeSpec(maxMessagesCount: 50, maxAwaitDurationMs: 1000))
        #expect(spec.metadata == ["rawPayload": "true", "other": "x"])
        #expect(spec.rawPayload)
        #expect(spec.origin == .declarative(name: "orders-sub", namespace: nil, source: resource.source))
    }

    @Test("a v1alpha1 Subscription's route becomes the default route; no route at all is no route")
    func v1() throws {
        let configuration = try load([
            "a.yaml": """
            apiVersion: dapr.io/v1alpha1
            kind: Subscription
            metadata: {name: one}
            spec: {pubsubname: pubsub, topic: t1, route: /t1}
            ---
            apiVersion: dapr.io/v1alpha1
            kind: Subscription
            metadata: {name: two}
            spec: {pubsubname: pubsub, topic: t2, bulkSubscribe: {enabled: false}}
            """
        ])
        #expect(configuration.subscriptions.map(\.error) == [nil, nil])
        #expect(configuration.subscriptions[0].spec?.routes == [SubscriptionRoute(path: "/t1")])
        #expect(configuration.subscriptions[1].spec?.routes == [])
        #expect(configuration.subscriptions[1].spec?.bulk == nil)
    }

    @Test(
        "an invalid Subscription is kept with its error, applies to no app, and does not reject the configuration",
        arguments: [
            (
                "apiVersion: dapr.io/v3\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: t}",
                "apiVersion"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: ''}",
                "spec.topic"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {topic: t}",
                "spec.pubsubname"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: t, route: /x}",
                "spec.route"
            ),
            (
                "apiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: t, routes: {default: /x}}",
                "spec.routes"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  pubsubname: p\n  topic: t\n  routes: {rules: [{match: 'event.type +', path: /x}]}",
                "spec.routes.rules[0].match"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec:\n  pubsubname: p\n  topic: t\n  routes: {rules: [{match: 'event.type == \"a\"'}]}",
                "spec.routes.rules[0].path"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: S_1}\nspec: {pubsubname: p, topic: t}",
                "metadata.name"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nspec: {pubsubname: p, topic: t, bulkSubscribe: {enabled: true, maxMessagesCount: -1}}",
                "spec.bulkSubscribe.maxMessagesCount"
            ),
            (
                "apiVersion: dapr.io/v2alpha1\nkind: Subscription\nmetadata: {name: s}\nscopes: [Bad_Scope]\nspec: {pubsubname: p, topic: t}",
                "scopes[0]"
            ),
        ])
    func invalid(text: String, field: String) throws {
        let configuration = try load(["bad.yaml": text])
        let resource = try #require(configuration.subscriptions.first)
        let error = try #require(resource.error)
        #expect(error.field == field, "\(error)")
        #expect(resource.spec == nil)
        #expect(configuration.declarativeSubscriptions(for: teamAOrders).subscriptions.isEmpty)
    }

    @Test("a match Hangar cannot evaluate names what is unsupported")
    func unsupportedMatch() throws {
        let configuration = try load([
            "bad.yaml": """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: s}
            spec:
              pubsubname: p
              topic: t
              routes: {rules: [{match: 'event.data.n * 2 > 4', path: /x}]}
            """
        ])
        let error = try #require(configuration.subscriptions.first?.error)
        #expect(error.description.contains("arithmetic ('*') is not supported"), "\(error)")
    }

    @Test("the same name twice in one namespace: the second is invalid")
    func duplicates() throws {
        let text = """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: s}
            spec: {pubsubname: pubsub, topic: t}
            """
        let configuration = try load([
            "a.yaml": text, "b.yaml": text.replacingOccurrences(of: "topic: t", with: "topic: u"),
        ])
        #expect(configuration.subscriptions[0].error == nil)
        #expect(configuration.subscriptions[1].error?.message.contains("also declared in") == true)
    }

    @Test("selection: node-wide ones apply in every tenant, namespaced ones in theirs, scopes narrow to app ids")
    func selection() throws {
        func sub(_ name: String, namespace: String? = nil, scopes: [String] = [], topic: String) -> String {
            """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: \(name)\(namespace.map { ", namespace: \($0)" } ?? "")}
            \(scopes.isEmpty ? "" : "scopes: [\(scopes.joined(separator: ", "))]")
            spec: {pubsubname: pubsub, topic: \(topic), routes: {default: /\(topic)}}
            """
        }
        let configuration = try load([
            "1.yaml": sub("everyone", topic: "all"),
            "2.yaml": sub("team-a-only", namespace: "team-a", topic: "a"),
            "3.yaml": sub("orders-only", scopes: ["orders"], topic: "o"),
            "4.yaml": sub("team-b-billing", namespace: "team-b", scopes: ["billing"], topic: "b"),
            "5.yaml": sub("nowhere", namespace: "team-c", topic: "c"),
        ])
        func topics(_ app: AppID) -> [String] {
            configuration.declarativeSubscriptions(for: app).subscriptions.map(\.topic)
        }
        #expect(topics(teamAOrders) == ["all", "a", "o"])
        #expect(topics(teamABilling) == ["all", "a"])
        #expect(topics(teamBOrders) == ["all", "o"])
        // A namespace no tenant declares applies only to apps of that namespace, should one appear.
        #expect(topics(AppID(namespace: "team-c", appId: "x")) == ["all", "c"])
    }

    @Test("only the first declared subscription per pubsub+topic is used for an app; the later one is reported")
    func firstWins() throws {
        func sub(_ name: String, scopes: String = "", path: String) -> String {
            """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: \(name)}
            \(scopes)
            spec: {pubsubname: pubsub, topic: orders, routes: {default: \(path)}}
            """
        }
        let configuration = try load([
            "a.yaml": sub("first", scopes: "scopes: [billing]", path: "/first"),
            "b.yaml": sub("second", path: "/second"),
        ])
        let billing = configuration.declarativeSubscriptions(for: teamABilling)
        #expect(billing.subscriptions.map(\.routes) == [[SubscriptionRoute(path: "/first")]])
        #expect(billing.shadowed.map { "\($0.resource.name)<\($0.by.name)" } == ["second<first"])
        let orders = configuration.declarativeSubscriptions(for: teamAOrders)
        #expect(orders.subscriptions.map(\.routes) == [[SubscriptionRoute(path: "/second")]])
        #expect(orders.shadowed.isEmpty)
    }

    @Test("a programmatic subscription replaces the declarative one of the same pubsub+topic in place")
    func precedence() throws {
        let declared = [
            SubscriptionSpec(
                origin: .declarative(name: "a", namespace: nil, source: "x"), pubsubName: "p", topic: "a", routes: []),
            SubscriptionSpec(
                origin: .declarative(name: "b", namespace: nil, source: "x"), pubsubName: "p", topic: "b", routes: []),
        ]
        let programmatic = [
            SubscriptionSpec(
                origin: .programmatic, pubsubName: "p", topic: "c", routes: [SubscriptionRoute(path: "/c")]),
            SubscriptionSpec(
                origin: .programmatic, pubsubName: "p", topic: "a", routes: [SubscriptionRoute(path: "/a")]),
            SubscriptionSpec(
                origin: .programmatic, pubsubName: "q", topic: "b", routes: [SubscriptionRoute(path: "/qb")]),
        ]
        let merged = SubscriptionSources.effective(declarative: declared, programmatic: programmatic)
        #expect(merged.map { "\($0.pubsubName)/\($0.topic)" } == ["p/a", "p/b", "p/c", "q/b"])
        #expect(merged[0].origin == .programmatic)
        #expect(merged[1].origin == .declarative(name: "b", namespace: nil, source: "x"))
    }
}
