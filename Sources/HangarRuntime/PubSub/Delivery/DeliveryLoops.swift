import HangarComponents
import NIOCore
import Synchronization

/// The node's running delivery loops (streaming and push) by consumer (component and consumer group on a physical
/// topic), so that messages one loop gives back (its end, a RETRY) wake the other loops of the same consumer at
/// once: a component only notifies publishes, and a loop with nothing to fetch otherwise sleeps until the next
/// publish or until the earliest lease it knew of ends. Registration is per loop (start to stop), outside any
/// per-call path.
package final class DeliveryLoops: Sendable {
    struct Key: Hashable {
        var component: ObjectIdentifier
        var consumer: PubSubConsumer
    }

    private let running = Mutex<[Key: [ObjectIdentifier: NIOLoopBound<DeliveryLoop>]]>([:])

    package init() {}

    func add(_ loop: NIOLoopBound<DeliveryLoop>, _ key: Key) {
        running.withLock { $0[key, default: [:]][ObjectIdentifier(loop.value)] = loop }
    }

    func remove(_ loop: ObjectIdentifier, _ key: Key) {
        running.withLock { running in
            running[key]?[loop] = nil
            if running[key]?.isEmpty == true { running[key] = nil }
        }
    }

    /// Tells every running loop of the consumer that messages became deliverable again, on its own event loop.
    func wake(_ key: Key) {
        let loops = running.withLock { $0[key].map { Array($0.values) } ?? [] }
        for loop in loops { loop.eventLoop.execute { loop.value.messagesReturned() } }
    }

    /// How many loops run on the node (for tests and metrics).
    package var count: Int { running.withLock { $0.values.reduce(0) { $0 + $1.count } } }
}
