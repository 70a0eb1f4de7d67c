import Foundation
package import HangarComponents
import Logging
import NIOCore

/// Where a delivery loop hands the messages it leases: a stream (`StreamingSubscription`: it sends, and the answer
/// arrives later by id) or an app channel (`PushSubscription`: a call whose future is the answer). Called on the
/// loop's event loop only.
package protocol DeliverySink: AnyObject {
    /// Delivers `deliveries` (in sequence order; none past the policy's attempts): each is either tracked
    /// (`loop.track`) and sent, its answer given later with `loop.complete(key:_:)`, or settled at once
    /// (`loop.settle`). Returns false when the sink can take no more until it calls `loop.resume()`.
    func deliver(_ deliveries: [PubSubDelivery], loop: DeliveryLoop) -> Bool

    /// The loop ended on its own (the component was retired or closed); it has already given its messages back.
    func loopEnded(_ loop: DeliveryLoop)
}

/// The delivery loop shared by streaming and push subscriptions: between one consumer of a topic (the subscribing
/// app's consumer group) and one sink. It leases at most `window` messages at a time, hands them to the sink, and
/// waits for the component's publish notification (or the next redelivery time) when there is nothing to fetch:
/// no polling. How each delivery ends (`DeliveryOutcome`) decides what happens to the message: SUCCESS acks, RETRY
/// (or a failure) nacks with a retry after the wait its `DeliveryPolicy` gives, or, once the policy allows no more
/// (or its `matching` does not retry the failure), dead-letters it when there is a dead-letter topic, else drops it
/// (logged, counted); DROP goes to the dead-letter topic when one is set (else acks). A message leased past the
/// policy's attempts (its deliveries were never answered) is not delivered again but dead-lettered or dropped.
/// A delivery never answered stays leased until its lease ends, then comes back (to this loop or another of the
/// consumer); its slot in the window is freed then too, so a sink that stops answering cannot stall the loop.
///
/// Dead-lettering publishes the original message through `PubSubAPI`'s publish path (topic scopes, the tenant's
/// `maxPubsubBytes`, the publish metrics), on behalf of the subscribing app, and acks the original once that is
/// done; a refused or failed publish nacks it (it comes back after `retryAfter`), as Dapr does.
///
/// A loop whose component is retired (removed from the configuration, or replaced) ends by itself and tells its
/// sink: its handle would otherwise fail every second for ever. `stop()` gives every unanswered message back at
/// once (nack without delay), so another loop of the same consumer receives it.
///
/// Confined to `eventLoop`: every method is called there, and every completion hops back there through a
/// `NIOLoopBound` of the loop (which checks it), so the state needs no lock. Owners that must be `Sendable` hold
/// it in a `NIOLoopBoundBox`.
package final class DeliveryLoop {
    /// Dapr's redelivery after RETRY without a resiliency policy.
    package static let retryDelay: Duration = .seconds(1)
    /// Deliveries before a message is dropped or dead-lettered (the default, without a Resiliency policy).
    package static let maxAttempts = 10
    /// How long an ack waits for others to go with it, and how many go at once at most.
    static let ackDelay = TimeAmount.microseconds(500)
    static let ackBatch = 64

    let handle: TenantPubSubHandle
    /// The topic as the app names it.
    package let topic: String
    let physicalTopic: String
    let deadLetterTopic: String?
    let eventLoop: any EventLoop
    let logger: Logger?
    /// The most messages in flight (handed to the sink and not settled) at once.
    let window: Int
    /// The most messages handed to the sink in one `deliver` (a bulk subscription's `maxMessagesCount`).
    let batchLimit: Int
    /// A bulk subscription's `maxAwaitDurationMs`: a batch smaller than `batchLimit` is held this long after its
    /// first message, for more to join it (Dapr's default bulk subscriber); nil: every fetch is delivered at once.
    let gatherFor: Duration?
    /// How much longer than its deadline a delivery's message stays leased, when there is a deadline.
    let leaseMargin: Duration
    /// The sink's deadline for each delivery when the policy sets none (push: 60 s); nil: none (streaming).
    let defaultTimeout: Duration?
    /// The built-in rule's wait after a RETRY (`retryDelay` but in tests), and the wait of a message given back for
    /// another reason than its failure (a dead-letter publish refused, a key in flight twice).
    let retryAfter: Duration
    /// Retries and the delivery deadline: the component's inbound Resiliency policy, else the built-in rule.
    /// Resolved at `start()` and on every configuration reload (`refreshPolicy()`).
    package private(set) var policy: DeliveryPolicy
    private let api: PubSubAPI
    private let key: DeliveryLoops.Key
    private let series: DeliverySeries
    /// What `GetMetadata` lists of a streaming subscription; nil for a push subscription (listed by its source).
    let listing: StreamingSubscriptionListing?
    private var sink: (any DeliverySink)?
    /// Acks not sent yet (`flushAcks`).
    private var acks: [PubSubDeliveryID] = []
    /// The tenant whose `maxSubscriptions` this loop counts against, until it stops (or is released).
    private let account: TenantAccount?
    private var holdsSubscription: Bool

    /// Messages leased for a bulk batch that is still gathering (`gatherFor`), and when it goes out at the latest.
    private var gathered: [PubSubDelivery] = []
    private var gatherUntil: NIODeadline?
    /// Deliveries handed out and not settled, by the sink's key, with the end of their lease.
    private var inFlight: [String: (delivery: PubSubDelivery, leasedUntil: NIODeadline)] = [:]
    /// The end of the lease of the batch being delivered.
    private var batchLeasedUntil = NIODeadline.now()
    private var fetching = false
    /// The sink is being handed a batch: settlements made meanwhile fetch again after it, not inside it.
    private var delivering = false
    /// Messages were given back during a fetch, which may have missed them: fetch again instead of sleeping.
    private var returnedWhileFetching = false
    private var paused = false
    private var started = false
    private var stopped = false
    /// The wait for a publish (completing it with false ends the wait and releases its observation).
    private var waiting: EventLoopPromise<Bool>?
    private var timer: Scheduled<Void>?

    /// A loop for `handle`'s consumer of `topic` (which must exist: `ensureConsumer`). `deadLetterTopic` must have
    /// been checked (`PubSubAPI.checkDeadLetterTopic`). May be made on any thread; used on `eventLoop` only.
    init(
        api: PubSubAPI, handle: TenantPubSubHandle, topic: String, deadLetterTopic: String?, window: Int,
        batchLimit: Int? = nil, gatherFor: Duration? = nil, defaultTimeout: Duration? = nil,
        leaseMargin: Duration = .zero,
        retryAfter: Duration = DeliveryLoop.retryDelay,
        listing: StreamingSubscriptionListing? = nil, eventLoop: any EventLoop, logger: Logger?,
        sink: any DeliverySink
    ) throws(APIError) {
        self.retryAfter = retryAfter
        self.policy = .builtIn(retryDelay: retryAfter)
        self.defaultTimeout = defaultTimeout
        self.leaseMargin = leaseMargin
        self.listing = listing
        self.api = api
        self.handle = handle
        self.topic = topic
        self.physicalTopic = try handle.physicalTopic(topic)
        self.key = DeliveryLoops.Key(component: ObjectIdentifier(handle.pubsub), consumer: try handle.consumer(topic))
        self.deadLetterTopic = deadLetterTopic
        self.window = max(1, window)
        self.batchLimit = max(1, min(batchLimit ?? window, window))
        self.gatherFor = gatherFor.flatMap { $0 > .zero ? $0 : nil }
        self.eventLoop = eventLoop
        self.logger = logger
        self.sink = sink
        self.series = api.metrics.deliverySeries(app: handle.app, component: handle.name, topic: topic)
        // Every loop is one of the tenant's subscriptions (streaming or push), held until it stops.
        account = handle.tenant
        if let refusal = handle.tenant?.acquireSubscription() {
            api.metrics.recordQuotaRefusal(app: handle.app, quota: refusal.quota)
            throw QuotaError.exceeded(refusal, app: handle.app)
        }
        holdsSubscription = account != nil
    }

    deinit {
        // A loop made and never started or stopped (its stream's handshake failed) gives its subscription back.
        if holdsSubscription { account?.releaseSubscription() }
    }

    /// The loop as its completions reach it: on its event loop, checked.
    private var bound: NIOLoopBound<DeliveryLoop> { NIOLoopBound(self, eventLoop: eventLoop) }

    /// Deliveries in flight now.
    package var inFlightCount: Int { inFlight.count }

    /// Whether the loop is paused (`pause()` without `resume()` since, or a sink that took no more).
    package var isPaused: Bool { paused }

    /// The deadline of each delivery: the policy's timeout, else the sink's default (nil: none).
    package var deliveryTimeout: Duration? { policy.timeout ?? defaultTimeout }

    /// How long each fetch leases its messages: the delivery deadline and `leaseMargin` (so that a message is not
    /// delivered again while its call still runs), else the component's `ackTimeout`.
    /// A gathering batch's messages are leased for that wait too.
    var lease: Duration? { deliveryTimeout.map { $0 + leaseMargin + (gatherFor ?? .zero) } }

    /// Resolves the policy again from the configuration in force (the loop's start, a reload): the next failure
    /// and the next fetch follow it. Logged when it changes.
    package func refreshPolicy() {
        let inbound =
            api.registry?.configuration.inboundPolicy(for: handle.app, component: handle.name) ?? .none
        let policy = DeliveryPolicy(inbound, builtInRetryDelay: retryAfter)
        guard policy != self.policy else { return }
        self.policy = policy
        logger?.info("subscription on \(topic) (pubsub \(handle.name)) follows \(policy.origin) delivery policy")
    }

    /// Starts delivering (paused if `pause()` came first).
    package func start() {
        guard !stopped, !started else { return }
        started = true
        series.position.track(handle.pubsub, topic: physicalTopic)
        api.subscriptions.add(bound, key, listing: listing)
        // After `add`: a reload from now on refreshes this loop too, so none is missed.
        refreshPolicy()
        pump()
    }

    /// Stops fetching until `resume()` (the stream is not writable, the app is unhealthy). Deliveries in flight
    /// are still settled.
    package func pause() { paused = true }

    /// Fetches again after `pause()`.
    package func resume() {
        guard paused else { return }
        paused = false
        pump()
    }

    /// Registers `delivery` as in flight under `key` (a CloudEvent id for a stream, whatever the sink matches
    /// answers by). Refused when another message is in flight under the same key (the answers could not tell
    /// them apart): that one is given back for later. A redelivery of a message still in flight replaces it.
    package func track(_ delivery: PubSubDelivery, key: String) -> Bool {
        if let earlier = inFlight[key] {
            guard earlier.delivery.sequence == delivery.sequence else {
                nack([delivery.id], after: retryAfter)
                return false
            }
        } else {
            series.addInFlight(1)
        }
        inFlight[key] = (delivery, batchLeasedUntil)
        return true
    }

    /// The answer for the delivery tracked under `key`. An unknown key (answered twice, from before a
    /// redelivery, or after `stop()`) is ignored, as Dapr logs and drops it.
    package func complete(key: String, _ outcome: DeliveryOutcome) {
        guard let delivery = inFlight.removeValue(forKey: key)?.delivery else {
            logger?.debug("subscription: answer for unknown event \(key) on \(topic) ignored")
            return
        }
        series.addInFlight(-1)
        settle(delivery, outcome)
        pump()
    }

    /// Settles a delivery that is not tracked (the sink answers for it at once).
    package func settle(_ delivery: PubSubDelivery, _ outcome: DeliveryOutcome) {
        switch outcome {
        case .success:
            series.record(.success)
            ack(delivery)
        case .retry(let why):
            retryOrGiveUp(delivery, why, code: nil)
        case .failed(let why, let code):
            retryOrGiveUp(delivery, why, code: code)
        case .drop(let why):
            deadLetterOrDrop(delivery, reason: why)
        case .discard(let why):
            series.record(.drop)
            logger?.warning("subscription: message \(delivery.sequence) on \(topic) dropped: \(why)")
            ack(delivery)
        case .undeliverable(let why):
            if deadLetterTopic != nil {
                deadLetterOrDrop(delivery, reason: why)
            } else {
                retryOrGiveUp(delivery, why, code: nil)
            }
        }
    }

    /// A failed delivery: nacked for the wait the policy gives, or, when it allows no more (or does not retry this
    /// failure), dead-lettered or dropped at once.
    private func retryOrGiveUp(_ delivery: PubSubDelivery, _ why: String, code: DeliveryFailureCode?) {
        switch policy.afterFailure(attempt: delivery.attempt, code: code) {
        case .retry(let delay):
            series.record(.retry)
            logger?.debug("subscription: message \(delivery.sequence) on \(topic) retried: \(why)")
            nack([delivery.id], after: delay)
        case .giveUp(let reason):
            deadLetterOrDrop(delivery, reason: "\(reason): \(why)")
        }
    }

    /// Ends delivery: unanswered messages are given back for redelivery, the wait is released.
    package func stop() {
        guard !stopped else { return }
        stopped = true
        flushAcks()
        if holdsSubscription {
            holdsSubscription = false
            account?.releaseSubscription()
        }
        if started { api.subscriptions.remove(ObjectIdentifier(self), key) }
        cancelWait()
        series.addInFlight(-inFlight.count)
        let pending = inFlight.values.map(\.delivery.id) + gathered.map(\.id)
        inFlight.removeAll()
        gathered.removeAll()
        gatherUntil = nil
        nack(pending, after: .zero)
        sink = nil
    }

    /// Another loop of the same consumer gave messages back: fetch again if asleep.
    func messagesReturned() {
        if fetching { returnedWhileFetching = true } else { wake() }
    }

    // MARK: Settling

    /// Acks `delivery` with the others settled within `ackDelay` (or `ackBatch` of them): one component call (one
    /// job for a durable component's writer) for a batch of answers rather than one per message. Answers to pushed
    /// events arrive one call at a time, so a turn alone would rarely hold more than one.
    private func ack(_ delivery: PubSubDelivery) {
        acks.append(delivery.id)
        if acks.count >= Self.ackBatch { return flushAcks() }
        guard acks.count == 1 else { return }
        let bound = self.bound
        eventLoop.scheduleTask(in: Self.ackDelay) { bound.value.flushAcks() }
    }

    private func flushAcks() {
        guard !acks.isEmpty else { return }
        let ids = acks
        acks = []
        handle.ack(topic, ids, on: eventLoop).whenComplete { [logger, topic] result in
            if case .failure(let error) = result { logger?.warning("subscription: ack on \(topic) failed: \(error)") }
        }
    }

    /// Nacks deliveries, then wakes the consumer's loops (a retry's delay is left to their timers: a loop that
    /// fetches before it passes sleeps until then, as `nextRedeliveryAt` says).
    private func nack(_ ids: [PubSubDeliveryID], after delay: Duration) {
        guard !ids.isEmpty else { return }
        let registry = api.subscriptions
        let key = self.key
        handle.nack(topic, ids, retryAfter: delay, on: eventLoop).whenComplete { _ in registry.wake(key) }
    }

    /// Publishes the original message to the dead-letter topic through the publish path and acks it once that is
    /// done (nacks it when that fails); without a dead-letter topic, acks it.
    private func deadLetterOrDrop(_ delivery: PubSubDelivery, reason: String) {
        guard let deadLetterTopic else {
            series.record(.drop)
            logger?.info("subscription: message \(delivery.sequence) on \(topic) \(reason); dropped")
            return ack(delivery)
        }
        let series = self.series
        let bound = self.bound
        let topic = self.topic
        let logger = self.logger
        api.deadLetter(delivery.message, handle: handle, topic: deadLetterTopic, on: eventLoop).whenComplete { result in
            let loop = bound.value
            switch result {
            case .success:
                series.record(.deadLetter)
                logger?.info(
                    "subscription: message \(delivery.sequence) on \(topic) \(reason); sent to \(deadLetterTopic)")
                loop.ack(delivery)
            case .failure(let error):
                series.record(.retry)
                logger?.warning(
                    """
                    subscription: message \(delivery.sequence) on \(topic) \(reason), and the dead-letter topic \
                    \(deadLetterTopic) refused it: \(error); retried
                    """)
                loop.nack([delivery.id], after: loop.retryAfter)
            }
        }
    }

    // MARK: Fetching

    /// Fetches and delivers while there is room; waits for a publish or a redelivery when there is nothing, and,
    /// when every slot holds an unanswered delivery, for the first of their leases to end.
    private func pump() {
        guard started, !stopped, !fetching, !paused, !delivering else { return }
        if handle.pool.isRetired { return end("its component was retired") }
        // Refill in batches: while more than `refillAt` deliveries are out, wait for more answers (each calls
        // pump) rather than lease one message per answer, which on a durable component is a write per message.
        let refillAt = window - max(1, window / 4)
        if inFlight.count > refillAt {
            // Deliveries whose lease ended are the component's to redeliver: their slots are free again.
            let now = NIODeadline.now()
            let before = inFlight.count
            inFlight = inFlight.filter { $0.value.leasedUntil > now }
            series.addInFlight(inFlight.count - before)
            if inFlight.count > refillAt {
                let first = inFlight.values.map(\.leasedUntil).min() ?? now
                cancelWait()
                let bound = self.bound
                timer = eventLoop.scheduleTask(deadline: first) {
                    bound.value.timer = nil
                    bound.value.pump()
                }
                return
            }
        }
        fetching = true
        returnedWhileFetching = false
        let seen = handle.pubsub.lastSequence(of: physicalTopic)
        let bound = self.bound
        let eventLoop = self.eventLoop
        let limit = min(window - inFlight.count, batchLimit) - gathered.count
        guard limit > 0 else { return deliverGathered() }
        handle.fetch(topic, limit: limit, lease: lease, on: eventLoop)
            .whenComplete { result in
                // Always on the loop's next turn: an inline component answers within this call.
                eventLoop.execute { bound.value.fetched(result, seen: seen, limit: limit) }
            }
    }

    private func fetched(_ result: Result<PubSubFetchResult, any Error>, seen: UInt64, limit: Int) {
        fetching = false
        let batch: PubSubFetchResult
        switch result {
        case .success(let value): batch = value
        case .failure(let error):
            guard !stopped else { return }
            if handle.pool.isRetired || PubSubError.from(error) == .closed {
                return end("its component was retired or closed")
            }
            logger?.warning("subscription: fetch on \(topic) failed: \(error)")
            return wait(beyond: seen, until: Date().addingTimeInterval(1))
        }
        if stopped {
            // Leased after the loop ended: give them back at once.
            return nack(batch.deliveries.map(\.id), after: .zero)
        }
        // How far the consumer's cursor has moved (for the lag gauge): past every new message fetched, and past
        // everything published before the fetch when it came back with room to spare.
        var reached = batch.deliveries.lazy.filter { $0.attempt == 1 }.map(\.sequence).max() ?? 0
        if batch.deliveries.count < limit { reached = max(reached, seen) }
        series.position.advance(to: reached)
        let lease = self.lease ?? handle.pubsub.ackTimeout
        batchLeasedUntil = NIODeadline.now() + TimeAmount(lease)
        var deliverable: [PubSubDelivery] = []
        deliverable.reserveCapacity(batch.deliveries.count)
        for delivery in batch.deliveries {
            if !policy.allowsDelivery(attempt: delivery.attempt) {
                deadLetterOrDrop(
                    delivery, reason: "was not processed after \(delivery.attempt - 1) attempts (\(policy.origin))")
                continue
            }
            if delivery.attempt > 1 { series.recordRedelivery() }
            deliverable.append(delivery)
        }
        if let gatherFor, !deliverable.isEmpty || !gathered.isEmpty {
            // A bulk batch waits for more messages until it is full or `gatherFor` after its first one.
            gathered += deliverable
            let now = NIODeadline.now()
            let until = gatherUntil ?? now + TimeAmount(gatherFor)
            gatherUntil = until
            if gathered.count < batchLimit, now < until, batch.deliveries.count < limit, !returnedWhileFetching {
                let latest = Date(timeIntervalSinceNow: Double((until - now).nanoseconds) / 1e9)
                return wait(beyond: seen, until: min(latest, batch.nextRedeliveryAt ?? latest))
            }
            return deliverGathered()
        }
        hand(deliverable)
        if stopped { return }
        if batch.deliveries.isEmpty, !returnedWhileFetching {
            wait(beyond: seen, until: batch.nextRedeliveryAt)
        } else {
            pump()
        }
    }

    /// Hands `deliveries` to the sink.
    private func hand(_ deliveries: [PubSubDelivery]) {
        guard !deliveries.isEmpty, let sink else { return }
        delivering = true
        let more = sink.deliver(deliveries, loop: self)
        delivering = false
        if !more { paused = true }
    }

    /// Sends the gathering bulk batch as it is, then fetches on.
    private func deliverGathered() {
        let batch = gathered
        gathered = []
        gatherUntil = nil
        hand(batch)
        if !stopped { pump() }
    }

    /// Sleeps until the topic has a message beyond `sequence`, the component closes, or `deadline` passes; then
    /// fetches again.
    private func wait(beyond sequence: UInt64, until deadline: Date?) {
        cancelWait()
        let promise = eventLoop.makePromise(of: Bool.self)
        waiting = promise
        let timeout = deadline.map { Duration.seconds(max(0, $0.timeIntervalSinceNow)) + .milliseconds(1) }
        let bound = self.bound
        promise.futureResult.whenComplete { _ in bound.value.waited(promise.futureResult) }
        handle.pubsub.waitForPublish(to: physicalTopic, beyond: sequence, timeout: timeout, completing: promise)
    }

    private func waited(_ future: EventLoopFuture<Bool>) {
        guard let waiting, waiting.futureResult === future else { return }
        self.waiting = nil
        pump()
    }

    private func wake() {
        guard waiting != nil || timer != nil else { return }
        cancelWait()
        pump()
    }

    private func cancelWait() {
        let waiting = self.waiting
        self.waiting = nil
        waiting?.succeed(false)
        timer?.cancel()
        timer = nil
    }

    /// Ends the loop by itself and tells the sink.
    private func end(_ why: String) {
        let sink = self.sink
        logger?.info("subscription on \(topic) (pubsub \(handle.name)) ended: \(why)")
        stop()
        sink?.loopEnded(self)
    }
}
