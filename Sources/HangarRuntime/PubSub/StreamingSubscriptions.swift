import HangarComponents
import Synchronization

/// The node's open streaming subscriptions by consumer (component and consumer group on a physical topic), so that
/// messages one stream gives back (its end, a RETRY) wake the other streams of the same app at once: a component
/// only notifies publishes, and a stream with nothing to fetch otherwise sleeps until the next publish or until
/// the earliest lease it knew of ends. Registration is per stream (open to stop), outside any per-call path.
package final class StreamingSubscriptions: Sendable {
    struct Key: Hashable {
        var component: ObjectIdentifier
        var consumer: PubSubConsumer
    }

    private let open = Mutex<[Key: [ObjectIdentifier: StreamingSubscription]]>([:])

    package init() {}

    func add(_ subscription: StreamingSubscription, _ key: Key) {
        open.withLock { $0[key, default: [:]][ObjectIdentifier(subscription)] = subscription }
    }

    func remove(_ subscription: StreamingSubscription, _ key: Key) {
        open.withLock { open in
            open[key]?[ObjectIdentifier(subscription)] = nil
            if open[key]?.isEmpty == true { open[key] = nil }
        }
    }

    /// Tells every open stream of the consumer that messages became deliverable again.
    func wake(_ key: Key) {
        let subscriptions = open.withLock { $0[key].map { Array($0.values) } ?? [] }
        for subscription in subscriptions { subscription.messagesReturned() }
    }

    /// The streams `app` has open, oldest first, for `GetMetadata`.
    package func listings(of app: AppID) -> [StreamingSubscriptionListing] {
        open.withLock { open in open.values.flatMap { $0.values.map(\.listing) } }
            .filter { $0.app == app }
            .sorted { $0.opened < $1.opened }
    }

    /// Numbers streams in the order they open, so that their listing keeps that order.
    private let opened = Atomic<UInt64>(0)

    func nextOpened() -> UInt64 { opened.add(1, ordering: .relaxed).newValue }

    /// How many streams are open on the node (for tests and metrics).
    package var count: Int { open.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}

/// One open streaming subscription as metadata lists it.
package struct StreamingSubscriptionListing: Sendable, Hashable {
    package var app: AppID
    package var pubsubName: String
    package var topic: String
    /// nil: none.
    package var deadLetterTopic: String?
    package var metadata: [String: String]
    /// The order in which the streams opened on the node.
    package var opened: UInt64
}
