import Foundation
import HangarComponents
import Logging
import NIOCore

/// What a streaming subscription answers for one event (`TopicEventResponse.status`).
package enum SubscriptionOutcome: Sendable {
    case success, retry, drop
}

/// One streaming subscription (`SubscribeTopicEventsAlpha1`): the delivery loop between the caller's consumer of a
/// topic and one stream, on the stream's event loop (every method is called there; no locks).
///
/// The consumer group is the subscribing app (`TenantPubSubHandle.consumer`), so every stream of one app id
/// competes for the same messages and each app id gets every message. The loop leases at most `maxInFlight`
/// messages at a time, sends them while the stream is writable, and waits for the component's publish
/// notification (or the next redelivery time) when there is nothing to fetch: no polling. An answer is matched to
/// its event by CloudEvent id: SUCCESS acks, DROP goes to the dead-letter topic when one is set (else
/// acks), RETRY nacks with a retry after `retryDelay`; a message
/// delivered for the `maxAttempts + 1`th time goes to the dead-letter topic when one is set, else is dropped
/// (logged). An event never answered stays leased until the component's ack timeout, then comes back (to this
/// stream or another of the app); its in-flight slot on this stream is freed then too, so a subscriber that stops
/// answering cannot stall its stream for good.
///
/// `stop()` (the stream ended) gives every unanswered event back at once (nack without delay), so that another
/// stream of the same app receives it, and releases the notification: nothing is left behind.
package final class StreamingSubscription: @unchecked Sendable {
    /// The most events in flight (sent, not answered) on one stream: what bounds a subscriber that never answers.
    package static let maxInFlight = 100
    /// Dapr's redelivery after RETRY without a resiliency policy.
    package static let retryDelay: Duration = .seconds(1)
    /// Deliveries before a message is dropped or dead-lettered, as Dapr's default retry count.
    package static let maxAttempts = 10

    /// What `GetMetadata` lists of the stream (Dapr's STREAMING subscriptions): whose it is and what it asked for.
    package let listing: StreamingSubscriptionListing
    private let handle: TenantPubSubHandle
    private let topic: String
    private let physicalTopic: String
    private let deadLetterTopic: String?
    private let eventLoop: any EventLoop
    private let logger: Logger?
    private let send: (SubscriptionEvent) -> Bool
    private let registry: StreamingSubscriptions
    private let key: StreamingSubscriptions.Key

    /// Events sent and not answered, by CloudEvent id, with the end of their lease.
    private var inFlight: [String: (delivery: PubSubDelivery, leasedUntil: NIODeadline)] = [:]
    private var fetching = false
    /// Messages were given back during a fetch, which may have missed them: fetch again instead of sleeping.
    private var returnedWhileFetching = false
    private var writable = true
    private var stopped = false
    private var observation: PubSubObservation?
    private var timer: Scheduled<Void>?

    init(
        handle: TenantPubSubHandle, topic: String, physicalTopic: String, deadLetterTopic: String?,
        eventLoop: any EventLoop, logger: Logger?, registry: StreamingSubscriptions, consumer: PubSubConsumer,
        listing: StreamingSubscriptionListing, send: @escaping (SubscriptionEvent) -> Bool
    ) {
        self.listing = listing
        self.registry = registry
        self.key = StreamingSubscriptions.Key(component: ObjectIdentifier(handle.pubsub), consumer: consumer)
        self.handle = handle
        self.topic = topic
        self.physicalTopic = physicalTopic
        self.deadLetterTopic = deadLetterTopic
        self.eventLoop = eventLoop
        self.logger = logger
        self.send = send
    }

    /// Starts delivering (after the caller sent its `initial_response`).
    package func start() {
        guard !stopped else { return }
        registry.add(self, key)
        pump()
    }

    /// Another stream of the same consumer gave messages back (from any thread): fetch again if asleep.
    func messagesReturned() {
        eventLoop.execute {
            if self.fetching { self.returnedWhileFetching = true } else { self.wake() }
        }
    }

    /// The stream can take events again.
    package func resumeWriting() {
        writable = true
        pump()
    }

    /// The subscriber's answer for the event `id`. An unknown id (answered twice, or from before a redelivery) is
    /// ignored, as Dapr logs and drops it.
    package func processed(id: String, outcome: SubscriptionOutcome) {
        guard let delivery = inFlight.removeValue(forKey: id)?.delivery else {
            logger?.debug("streaming subscription: answer for unknown event \(id) ignored")
            return
        }
        switch outcome {
        case .success: settle(ack: [delivery.id])
        case .drop:
            deadLetterOrDrop(delivery, reason: "dropped by the subscriber")
        case .retry:
            giveBack([delivery.id], after: Self.retryDelay)
        }
        pump()
    }

    /// Ends delivery: unanswered events are given back for redelivery, the notification and timer are released.
    package func stop() {
        guard !stopped else { return }
        stopped = true
        registry.remove(self, key)
        cancelWait()
        let pending = inFlight.values.map(\.delivery.id)
        inFlight.removeAll()
        giveBack(pending, after: .zero)
    }

    /// Nacks deliveries, then wakes the consumer's other streams (a retry's delay is left to their timers: a
    /// stream that fetches before it passes sleeps until then, as `nextRedeliveryAt` says).
    private func giveBack(_ ids: [PubSubDeliveryID], after delay: Duration) {
        guard !ids.isEmpty else { return }
        let registry = self.registry
        let key = self.key
        handle.nack(topic, ids, retryAfter: delay, on: eventLoop).whenComplete { _ in registry.wake(key) }
    }

    private func settle(ack ids: [PubSubDeliveryID]) {
        handle.ack(topic, ids, on: eventLoop).whenComplete { [logger] result in
            if case .failure(let error) = result { logger?.warning("streaming subscription: ack failed: \(error)") }
        }
    }

    /// Publishes the original message to the dead-letter topic (same component, the caller's tenant and scopes)
    /// and acks it once that is done (nacks it when that fails); without a dead-letter topic, acks it.
    private func deadLetterOrDrop(_ delivery: PubSubDelivery, reason: String) {
        guard let deadLetterTopic else {
            logger?.info("streaming subscription: message \(delivery.sequence) on \(topic) \(reason); dropped")
            return settle(ack: [delivery.id])
        }
        let physical: String
        do {
            guard handle.mayPublish(deadLetterTopic) else {
                throw PubSubAPIError.forbidden(handle.name, topic: deadLetterTopic, app: handle.app)
            }
            physical = try handle.physicalTopic(deadLetterTopic)
        } catch {
            logger?.warning("streaming subscription: dead-letter topic refused (\(error)); message dropped")
            return settle(ack: [delivery.id])
        }
        let handle = self.handle
        let topic = self.topic
        let eventLoop = self.eventLoop
        handle.publish([delivery.message], toPhysical: physical, on: eventLoop).whenComplete { result in
            switch result {
            case .success: handle.ack(topic, [delivery.id], on: eventLoop).whenComplete { _ in }
            case .failure:
                handle.nack(topic, [delivery.id], retryAfter: Self.retryDelay, on: eventLoop).whenComplete { _ in }
            }
        }
    }

    /// Fetches and sends while there is room; waits for a publish or a redelivery when there is nothing, and, when
    /// every slot holds an unanswered event, for the first of their leases to end.
    private func pump() {
        guard !stopped, !fetching, writable else { return }
        if inFlight.count >= Self.maxInFlight {
            // Events whose lease ended are the component's to redeliver: their slots are free again.
            let now = NIODeadline.now()
            inFlight = inFlight.filter { $0.value.leasedUntil > now }
            if inFlight.count >= Self.maxInFlight {
                let first = inFlight.values.map(\.leasedUntil).min() ?? now
                timer?.cancel()
                timer = eventLoop.scheduleTask(deadline: first) { [weak self] in
                    self?.timer = nil
                    self?.pump()
                }
                return
            }
        }
        fetching = true
        returnedWhileFetching = false
        let seen = handle.pubsub.lastSequence(of: physicalTopic)
        handle.fetch(topic, limit: Self.maxInFlight - inFlight.count, on: eventLoop).whenComplete { result in
            self.eventLoop.execute { self.fetched(result, seen: seen) }
        }
    }

    private func fetched(_ result: Result<PubSubFetchResult, any Error>, seen: UInt64) {
        fetching = false
        let batch: PubSubFetchResult
        switch result {
        case .success(let value): batch = value
        case .failure(let error):
            guard !stopped else { return }
            logger?.warning("streaming subscription: fetch on \(topic) failed: \(error)")
            return wait(beyond: seen, until: Date().addingTimeInterval(1))
        }
        if stopped {
            // Leased after the stream ended: give them back at once.
            return giveBack(batch.deliveries.map(\.id), after: .zero)
        }
        let leasedUntil = NIODeadline.now() + .nanoseconds(Int64(handle.pubsub.ackTimeout.timeInterval * 1e9))
        for delivery in batch.deliveries {
            if delivery.attempt > Self.maxAttempts {
                deadLetterOrDrop(delivery, reason: "was not processed after \(Self.maxAttempts) attempts")
                continue
            }
            let event: SubscriptionEvent
            do {
                event = try SubscriptionEvent.make(
                    delivery.message, topic: topic, pubsubName: handle.name, path: "/")
            } catch {
                deadLetterOrDrop(delivery, reason: "cannot be read as a CloudEvent (\(error))")
                continue
            }
            if let earlier = inFlight[event.id]?.delivery, earlier.sequence != delivery.sequence {
                // Another message with the same id is in flight: answers could not tell them apart.
                handle.nack(topic, [delivery.id], retryAfter: Self.retryDelay, on: eventLoop).whenComplete { _ in }
                continue
            }
            // A redelivery of an event still unanswered replaces it (its lease had ended).
            inFlight[event.id] = (delivery, leasedUntil)
            if !send(event) { writable = false }
        }
        if batch.deliveries.isEmpty, !returnedWhileFetching {
            wait(beyond: seen, until: batch.nextRedeliveryAt)
        } else {
            pump()
        }
    }

    /// Sleeps until the topic has a message beyond `sequence` or `deadline` passes, then fetches again.
    private func wait(beyond sequence: UInt64, until deadline: Date?) {
        cancelWait()
        let eventLoop = self.eventLoop
        observation = handle.pubsub.observe(topic: physicalTopic) { [weak self] last in
            guard last > sequence, let subscription = self else { return }
            eventLoop.execute { subscription.wake() }
        }
        if let deadline {
            let delay = max(0, deadline.timeIntervalSinceNow)
            timer = eventLoop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9) + 1_000_000)) { [weak self] in
                self?.wake()
            }
        }
        // A publish between the fetch and the observation.
        if handle.pubsub.lastSequence(of: physicalTopic) > sequence { wake() }
    }

    private func wake() {
        guard observation != nil || timer != nil else { return }
        cancelWait()
        pump()
    }

    private func cancelWait() {
        observation?.cancel()
        observation = nil
        timer?.cancel()
        timer = nil
    }
}
