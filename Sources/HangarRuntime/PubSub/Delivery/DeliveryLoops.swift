import HangarComponents
import NIOCore
import Synchronization
import HangarSync

/// The node's running delivery loops (streaming and push) by consumer (component and consumer group on a physical
/// topic), so that messages one loop gives back (its end, a RETRY) wake the other loops of the same consumer at
/// once: a component only notifies publishes, and a loop with nothing to fetch otherwise sleeps until the next
/// publish or until the earliest lease it knew of ends. Registration is per loop (start to stop), outside any
/// per-call path. A streaming subscription's loop also carries what `GetMetadata` lists of it.
package final class DeliveryLoops: Sendable {
    struct Key: Hashable {
        var component: ObjectIdentifier
        var consumer: PubSubConsumer
    }

    private struct Entry {
        var loop: NIOLoopBound<DeliveryLoop>
        /// Set for a streaming subscription's loop.
        var listing: StreamingSubscriptionListing?
    }

    private let running = Locked<[Key: [ObjectIdentifier: Entry]]>([:])
    /// Numbers streams in the order they open, so that their listing keeps that order.
    private let opened = Atomic<UInt64>(0)

    package init() {}

    func add(_ loop: NIOLoopBound<DeliveryLoop>, _ key: Key, listing: StreamingSubscriptionListing?) {
        let id = ObjectIdentifier(loop.value)
        running.withLock { $0[key, default: [:]][id] = Entry(loop: loop, listing: listing) }
    }

    func remove(_ loop: ObjectIdentifier, _ key: Key) {
        running.withLock { running in
            running[key]?[loop] = nil
            if running[key]?.isEmpty == true { running[key] = nil }
        }
    }

    /// Tells every running loop of the consumer that messages became deliverable again, on its own event loop.
    func wake(_ key: Key) {
        let loops = running.withLock { $0[key].map { $0.values.map(\.loop) } ?? [] }
        for loop in loops { loop.eventLoop.execute { loop.value.messagesReturned() } }
    }

    /// Has every running loop resolve its delivery policy again, on its own event loop (after a configuration
    /// reload: a changed Resiliency reaches running subscriptions without restarting them).
    package func refreshPolicies() {
        let loops = running.withLock { $0.values.flatMap { $0.values.map(\.loop) } }
        for loop in loops { loop.eventLoop.execute { loop.value.refreshPolicy() } }
    }

    /// The streams `app` has open, oldest first, for `GetMetadata`.
    package func listings(of app: AppID) -> [StreamingSubscriptionListing] {
        running.withLock { running in running.values.flatMap { $0.values.compactMap(\.listing) } }
            .filter { $0.app == app }
            .sorted { $0.opened < $1.opened }
    }

    func nextOpened() -> UInt64 { opened.add(1, ordering: .relaxed).newValue }

    /// How many loops run on the node (for tests and metrics).
    package var count: Int { running.withLock { $0.values.reduce(0) { $0 + $1.count } } }
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
