import Synchronization
import HangarSync

/// A registration made by `PubSub.observe(topic:_:)`; `cancel()` ends it (idempotent). Dropping it does not.
package final class PubSubObservation: Sendable {
    private let cancellation: @Sendable () -> Void
    private let cancelled = Atomic<Bool>(false)

    package init(cancellation: @escaping @Sendable () -> Void) {
        self.cancellation = cancellation
    }

    /// Stops the notifications. A handler call already under way may still finish.
    package func cancel() {
        guard !cancelled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        cancellation()
    }
}

/// The observers of each topic of one pub/sub component: how components implement `observe(topic:_:)` and
/// notify after a commit. Notifying a topic nobody observes costs one dictionary lookup under a lock.
package final class PubSubTopicObservers: Sendable {
    private struct State {
        var nextID = 0
        var byTopic: [String: [Int: @Sendable (UInt64) -> Void]] = [:]
        var closed = false
    }

    private let state = Locked(State())

    package init() {}

    package func observe(topic: String, _ handler: @escaping @Sendable (UInt64) -> Void) -> PubSubObservation {
        let id = state.withLock { state -> Int? in
            guard !state.closed else { return nil }
            state.nextID += 1
            state.byTopic[topic, default: [:]][state.nextID] = handler
            return state.nextID
        }
        guard let id else {
            // Closed already: told at once, as the observers registered before the close were.
            handler(Self.closedSequence)
            return PubSubObservation {}
        }
        return PubSubObservation { [weak self] in
            self?.state.withLock { state in
                state.byTopic[topic]?[id] = nil
                if state.byTopic[topic]?.isEmpty == true { state.byTopic[topic] = nil }
            }
        }
    }

    /// Calls the observers of each topic with its last sequence, outside the lock.
    package func notify(_ lastSequences: some Sequence<(topic: String, last: UInt64)>) {
        let calls = state.withLock { state -> [(@Sendable (UInt64) -> Void, UInt64)] in
            var calls: [(@Sendable (UInt64) -> Void, UInt64)] = []
            for (topic, last) in lastSequences {
                guard let handlers = state.byTopic[topic] else { continue }
                for handler in handlers.values { calls.append((handler, last)) }
            }
            return calls
        }
        for (handler, last) in calls { handler(last) }
    }

    /// How many observations are registered (for tests: a finished waiter leaves none behind).
    package var count: Int { state.withLock { $0.byTopic.values.reduce(0) { $0 + $1.count } } }

    /// The value observers hear once when the component closes: nothing more will be committed, so a waiter
    /// wakes (and finds the component closed at its next operation) rather than waiting for ever.
    package static let closedSequence = UInt64.max

    /// Drops every observer after calling each once with `closedSequence`; a later observation is called with it at
    /// once, and never again.
    package func close() {
        let handlers = state.withLock { state -> [@Sendable (UInt64) -> Void] in
            defer {
                state.closed = true
                state.byTopic = [:]
            }
            return state.byTopic.values.flatMap(\.values)
        }
        for handler in handlers { handler(Self.closedSequence) }
    }
}
