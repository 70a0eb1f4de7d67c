/// One subscription the runtime delivers to an app over its app channel (push delivery): a declarative
/// `Subscription` resource that applies to the app, or an entry of the app's programmatic list
/// (`AppCallback.ListTopicSubscriptions`, `GET /dapr/subscribe`). Streaming subscriptions
/// (`SubscribeTopicEventsAlpha1`) are not described by this type: the stream itself is the subscription.
///
/// Names are as the app sees them (the pub/sub component's name, the topic without any tenant prefix): the runtime
/// resolves them in the subscribing app's tenant, under the component's scopes, like a publish.
package struct SubscriptionSpec: Sendable, Hashable {
    /// Where the subscription comes from, which decides precedence (reference §2a): a programmatic subscription
    /// to a pubsub+topic replaces a declarative one; among declaratives, only the first per pubsub+topic is used.
    package enum Origin: Sendable, Hashable {
        /// A `Subscription` resource: its `metadata.name`, its namespace (nil: node-wide) and file.
        case declarative(name: String, namespace: String?, source: String)
        /// The app's own list, fetched over its app channel.
        case programmatic
    }

    package var origin: Origin
    package var pubsubName: String
    package var topic: String
    /// The routes in order: `rules` then `default` as a rule without match. The first whose match holds gives the
    /// path the event is delivered to; with none matching, the event is skipped (acked, or dead-lettered when a
    /// dead-letter topic is set), as Dapr does.
    package var routes: [SubscriptionRoute]
    /// nil: none (an empty string in the source means none).
    package var deadLetterTopic: String?
    /// nil: delivered one event per call.
    package var bulk: BulkSubscribeSpec?
    /// The subscription's metadata (`rawPayload`, component-specific keys).
    package var metadata: [String: String]

    package init(
        origin: Origin, pubsubName: String, topic: String, routes: [SubscriptionRoute], deadLetterTopic: String? = nil,
        bulk: BulkSubscribeSpec? = nil, metadata: [String: String] = [:]
    ) {
        self.origin = origin
        self.pubsubName = pubsubName
        self.topic = topic
        self.routes = routes
        self.deadLetterTopic = deadLetterTopic
        self.bulk = bulk
        self.metadata = metadata
    }

    /// Whether the app receives the stored bytes as they were published (`metadata.rawPayload: "true"`), wrapped in
    /// an envelope Dapr makes up, rather than the stored CloudEvent.
    package var rawPayload: Bool { metadata["rawPayload"]?.lowercased() == "true" }
}

/// One route of a subscription: deliver to `path` when `match` holds (always when nil).
package struct SubscriptionRoute: Sendable, Hashable {
    package var match: RouteMatch?
    /// The path as written: for an HTTP app the route it is POSTed to; for a gRPC app `TopicEventRequest.path`,
    /// echoed unchanged (the Python SDK's rule paths are handler names, and `""` is a plain subscription).
    package var path: String

    package init(match: RouteMatch? = nil, path: String) {
        self.match = match
        self.path = path
    }
}

/// `bulkSubscribe` of a subscription that has it enabled.
package struct BulkSubscribeSpec: Sendable, Hashable {
    /// Dapr's defaults for a component without native bulk subscribe (reference §3.2).
    package static let defaultMaxMessagesCount = 100
    package static let defaultMaxAwaitDurationMs = 1000

    package var maxMessagesCount: Int
    package var maxAwaitDurationMs: Int

    package init(
        maxMessagesCount: Int = Self.defaultMaxMessagesCount, maxAwaitDurationMs: Int = Self.defaultMaxAwaitDurationMs
    ) {
        self.maxMessagesCount = maxMessagesCount
        self.maxAwaitDurationMs = maxAwaitDurationMs
    }
}

/// Receives the push subscriptions each app has in effect (declarative ones that apply to it, overridden by its
/// programmatic ones), whenever they change. The delivery side implements it; the subscription sources (the
/// node's `Subscription` resources, each app's programmatic list) feed it.
package protocol SubscriptionSink: AnyObject, Sendable {
    /// Replaces `app`'s whole set of push subscriptions (empty: none). Deliveries of subscriptions that remain
    /// (same pubsub and topic) carry on; the consumer cursors of removed ones are kept (a subscription that
    /// returns receives what was published meanwhile).
    func setSubscriptions(_ subscriptions: [SubscriptionSpec], for app: AppID)
}
