import Foundation
import HangarComponents
import Logging
import NIOCore
import Synchronization

/// One push subscription of one app (a `SubscriptionSpec`): a `DeliveryLoop` whose sink is the app's channel. Each
/// leased message is routed (the first route whose `match` holds), turned into the event the app receives, and
/// pushed to the app in a `maxConcurrency` slot with a deadline; the call's answer settles it.
///
/// - No route matches: dropped (acked), or dead-lettered when the subscription has a dead-letter topic (Dapr).
/// - A route's `match` fails on the event, or the stored message is not a readable CloudEvent: dead-lettered at
///   once when there is a dead-letter topic, else retried (Dapr, §3.6).
/// - The app's answer is read by its channel with Dapr's meaning (§3.2, §3.3); a call that fails (unreachable, an
///   error status, the deadline) is a retry.
///
/// Retries follow the loop's `DeliveryPolicy`: the component's inbound Resiliency policy where one applies (its
/// `matching` sees the HTTP status or gRPC code of a failed call), else the rule rather than Dapr's default:
/// RETRY (or an error) redelivers after 1 s, up to 10 attempts, then the dead-letter topic if one is set, else the
/// message is dropped (logged and counted). Dapr with a dead-letter topic and no Resiliency policy dead-letters at
/// the first RETRY, and without one leaves redelivery to the broker (reference §3.2, §3.8); the rule gives
/// a transient failure its retries either way.
///
/// Every delivery has a deadline from when it is handed out (the inbound Resiliency timeout, else
/// `PushDelivery.deliveryTimeout`, 60 s by default), covering the wait for a slot and the call: Dapr sets none
/// without a policy, but an app that hangs would otherwise hold its slot and its message for ever. Messages are
/// leased a little longer than that, so a message is never delivered twice at once by a lease that ended under a
/// call still running.
///
/// Confined to its event loop (`NIOLoopBoundBox`); `start`, `pause`, `resume` and `stop` may be called from any
/// thread and hop there.
final class PushSubscription: Sendable {
    let app: AppID
    let spec: SubscriptionSpec
    let eventLoop: any EventLoop
    private let core: NIOLoopBoundBox<Core>
    private let ended = Flag()

    /// Set once the subscription stopped by itself; read from any thread.
    final class Flag: Sendable {
        private let value = Atomic<Bool>(false)
        func set() { value.store(true, ordering: .releasing) }
        var isSet: Bool { value.load(ordering: .acquiring) }
    }

    init(app: AppID, spec: SubscriptionSpec, eventLoop: any EventLoop, context: PushDelivery.Context) {
        self.app = app
        self.spec = spec
        self.eventLoop = eventLoop
        self.core = NIOLoopBoundBox.makeBoxSendingValue(
            Core(app: app, spec: spec, eventLoop: eventLoop, context: context, ended: ended), eventLoop: eventLoop)
    }

    /// Whether it stopped by itself (refused, or its component was retired): given again, it starts anew.
    var hasEnded: Bool { ended.isSet }

    /// Resolves the subscription, makes sure its consumer exists and starts delivering (paused while the app is
    /// unhealthy). A subscription that is refused is logged and not started. One whose component is not serving
    /// yet (initialising, as a `pubsub.sqlite` is while hangard starts, or DOWN with its initialisation retried)
    /// tries again until it is (`notReadyRetry`).
    func start() {
        let core = self.core
        eventLoop.execute { core.value.start() }
    }

    /// The app became unhealthy: no new deliveries until `resume()`.
    func pause() {
        let core = self.core
        eventLoop.execute { core.value.setHealthy(false) }
    }

    func resume() {
        let core = self.core
        eventLoop.execute { core.value.setHealthy(true) }
    }

    /// The app could not be reached (`false`: no deliveries until it can be again, `true`: it answers again).
    func setReachable(_ reachable: Bool) {
        let core = self.core
        eventLoop.execute { core.value.setReachable(reachable) }
    }

    /// Stops delivering; messages in flight are given back.
    func stop() {
        let core = self.core
        eventLoop.execute { core.value.stop() }
    }

    /// Whether the subscription's loop is paused, read on its event loop after what was asked of it before (for
    /// tests: a health change reaches the loop a turn after the channel reports it).
    func isPaused() -> EventLoopFuture<Bool> {
        let core = self.core
        return eventLoop.submit { core.value.loop?.isPaused ?? false }
    }

    /// How many deliveries are in flight, on the loop (for tests).
    func inFlight() -> EventLoopFuture<Int> {
        let core = self.core
        return eventLoop.submit { core.value.loop?.inFlightCount ?? 0 }
    }

    /// The subscription's side of the loop, on its event loop.
    private final class Core: DeliverySink {
        let app: AppID
        let spec: SubscriptionSpec
        let eventLoop: any EventLoop
        let delivery: PushDelivery.Context
        let ended: Flag
        var loop: DeliveryLoop?
        var opening = false
        var stopped = false
        /// The wait before the next start while the component is not serving (doubles, up to `maxNotReadyRetry`).
        var notReadyRetry = Core.firstNotReadyRetry
        var retry: Scheduled<Void>?

        static let firstNotReadyRetry = TimeAmount.milliseconds(50)
        static let maxNotReadyRetry = TimeAmount.seconds(2)
        /// The app's health as last heard (nil: not heard yet, read from the channels when starting).
        var healthy: Bool?
        /// False while the app cannot be reached at all (`PushDelivery` probes it and says when it answers again).
        var reachable = true

        init(app: AppID, spec: SubscriptionSpec, eventLoop: any EventLoop, context: PushDelivery.Context, ended: Flag) {
            self.app = app
            self.spec = spec
            self.eventLoop = eventLoop
            self.delivery = context
            self.ended = ended
        }

        var logger: Logger { delivery.logger }

        var metadata: Logger.Metadata {
            ["app": "\(app)", "pubsub": "\(spec.pubsubName)", "topic": "\(spec.topic)"]
        }

        func start() {
            guard !stopped, !opening, loop == nil else { return }
            let api = delivery.api
            let handle: TenantPubSubHandle
            do {
                handle = try api.components.scoped(
                    TenantPubSubHandle.self, named: spec.pubsubName, for: Caller(app: app, transport: .unixSocket),
                    tenant: api.registry?.tenantAccount(app.namespace))
                _ = try handle.physicalTopic(spec.topic)
                guard handle.maySubscribe(spec.topic) else {
                    throw PubSubAPIError.forbidden(spec.pubsubName, topic: spec.topic, app: app)
                }
                if let deadLetterTopic = spec.deadLetterTopic {
                    try api.checkDeadLetterTopic(deadLetterTopic, handle: handle)
                }
            } catch let error as APIError where error.errorCode == "ERR_PUBSUB_NOT_READY" {
                return retryLater(error)
            } catch {
                return refuse("\(error)")
            }
            notReadyRetry = Self.firstNotReadyRetry
            opening = true
            let core = NIOLoopBound(self, eventLoop: eventLoop)
            let eventLoop = self.eventLoop
            handle.ensureConsumer(spec.topic, on: eventLoop).whenComplete { result in
                eventLoop.execute { core.value.opened(result, handle: handle) }
            }
        }

        private func opened(_ result: Result<UInt64, any Error>, handle: TenantPubSubHandle) {
            opening = false
            guard !stopped else { return }
            if case .failure(let error) = result { return refuse("its consumer cannot be created: \(error)") }
            let window = max(PushDelivery.window, spec.bulk?.maxMessagesCount ?? 0)
            do {
                loop = try DeliveryLoop(
                    api: delivery.api, handle: handle, topic: spec.topic, deadLetterTopic: spec.deadLetterTopic,
                    window: min(window, PushDelivery.maxWindow), batchLimit: spec.bulk?.maxMessagesCount,
                    gatherFor: spec.bulk.map { .milliseconds($0.maxAwaitDurationMs) },
                    defaultTimeout: delivery.deliveryTimeout, leaseMargin: PushDelivery.leaseMargin,
                    retryAfter: delivery.retryDelay,
                    eventLoop: eventLoop,
                    logger: logger, sink: self)
            } catch {
                return refuse("\(error)")
            }
            reachable = delivery.reachability.isReachable(app)
            if !deliverable { loop?.pause() }
            loop?.start()
            logger.info("push subscription started", metadata: metadata)
        }

        /// The component is not serving yet: start again after `notReadyRetry` (logged once, when it first waits).
        private func retryLater(_ error: APIError) {
            if notReadyRetry == Self.firstNotReadyRetry {
                var metadata = self.metadata
                metadata["error"] = "\(error.message)"
                logger.info("push subscription waits for its component", metadata: metadata)
            }
            let core = NIOLoopBound(self, eventLoop: eventLoop)
            retry = eventLoop.scheduleTask(in: notReadyRetry) {
                core.value.retry = nil
                core.value.start()
            }
            notReadyRetry = min(notReadyRetry * 2, Self.maxNotReadyRetry)
        }

        private func refuse(_ why: String) {
            var metadata = self.metadata
            metadata["error"] = "\(why)"
            logger.error("push subscription refused: not started", metadata: metadata)
            ended.set()
        }

        /// Whether the app can take deliveries: healthy (as its probes say) and reachable.
        var deliverable: Bool { (healthy ?? delivery.channels.isHealthy(app) ?? false) && reachable }

        func setHealthy(_ healthy: Bool) {
            self.healthy = healthy
            if deliverable { loop?.resume() } else { loop?.pause() }
        }

        func setReachable(_ reachable: Bool) {
            self.reachable = reachable
            if deliverable { loop?.resume() } else { loop?.pause() }
        }

        func stop() {
            stopped = true
            retry?.cancel()
            retry = nil
            loop?.stop()
            loop = nil
        }

        func loopEnded(_ loop: DeliveryLoop) {
            self.loop = nil
            // A replaced component serves under the same name: carry on with it; a removed one refuses.
            start()
        }

        // MARK: Delivering

        func deliver(_ deliveries: [PubSubDelivery], loop: DeliveryLoop) -> Bool {
            // The inbound Resiliency timeout where one applies.
            let deadline = NIODeadline.now() + TimeAmount(loop.deliveryTimeout ?? delivery.deliveryTimeout)
            var batches: [(path: String, entries: [(PubSubDelivery, AppTopicEvent)])] = []
            for message in deliveries {
                switch prepare(message) {
                case .failure(let outcome):
                    loop.settle(message, outcome.outcome)
                case .success(let event):
                    guard loop.track(message, key: Self.key(message)) else { continue }
                    if spec.bulk == nil {
                        push(event, for: message, deadline: deadline, loop: loop)
                    } else if let index = batches.firstIndex(where: { $0.path == event.event.path }) {
                        batches[index].entries.append((message, event))
                    } else {
                        batches.append((event.event.path, [(message, event)]))
                    }
                }
            }
            for batch in batches { pushBulk(batch.entries, path: batch.path, deadline: deadline, loop: loop) }
            return true
        }

        static func key(_ delivery: PubSubDelivery) -> String { "\(delivery.sequence)" }

        /// An outcome as an error, for `prepare`'s result.
        struct Refusal: Error {
            let outcome: DeliveryOutcome
        }

        /// The event the app receives for `message`, with its route; or how it is settled without a call.
        private func prepare(_ message: PubSubDelivery) -> Result<AppTopicEvent, Refusal> {
            let stored = message.message
            let cloudEvent: [String: GoJSON]
            do {
                cloudEvent = try SubscriptionEvent.cloudEvent(
                    of: stored, topic: spec.topic, pubsubName: spec.pubsubName, raw: spec.rawPayload)
            } catch {
                return .failure(Refusal(outcome: .undeliverable("it cannot be read as a CloudEvent (\(error))")))
            }
            var matched: SubscriptionRoute?
            for route in spec.routes {
                do {
                    if try route.match?.evaluate(cloudEvent) ?? true {
                        matched = route
                        break
                    }
                } catch {
                    return .failure(Refusal(outcome: .undeliverable("its routing rule failed: \(error)")))
                }
            }
            guard let route = matched else { return .failure(Refusal(outcome: .drop("no route matches it"))) }
            do {
                let event = try SubscriptionEvent(
                    cloudEvent: cloudEvent, topic: spec.topic, pubsubName: spec.pubsubName, path: route.path)
                let envelope =
                    !spec.rawPayload && stored.contentType == CloudEventEnvelope.contentType
                    ? stored.data
                    : Data(GoJSON.object(cloudEvent).encoded)
                var metadata = stored.metadata
                metadata["pubsubName"] = spec.pubsubName
                return .success(
                    AppTopicEvent(
                        event: event, envelope: envelope, metadata: metadata,
                        traceparent: SubscriptionEvent.string(cloudEvent["traceparent"]),
                        tracestate: SubscriptionEvent.string(cloudEvent["tracestate"])))
            } catch {
                return .failure(Refusal(outcome: .undeliverable("it cannot be read as a CloudEvent (\(error))")))
            }
        }

        /// Runs `call` in one of the app's slots, within `deadline`; a failure is the app's not answering.
        private func inSlot<Value: Sendable>(
            deadline: NIODeadline, _ call: @escaping @Sendable (any AppChannel) -> EventLoopFuture<Value>
        ) -> EventLoopFuture<Value> {
            let eventLoop = self.eventLoop
            guard let entry = delivery.channels.entry(app) else {
                return eventLoop.makeFailedFuture(AppChannelError.unreachable("the app has no app channel"))
            }
            return entry.acquire(on: eventLoop).hop(to: eventLoop).flatMap { () -> EventLoopFuture<Value> in
                guard NIODeadline.now() < deadline else {
                    entry.release()
                    return eventLoop.makeFailedFuture(AppChannelError.deadlineExceeded)
                }
                return call(entry.channel).hop(to: eventLoop).always { _ in entry.release() }
            }
        }

        private func push(_ event: AppTopicEvent, for message: PubSubDelivery, deadline: NIODeadline, loop: DeliveryLoop)
        {
            let key = Self.key(message)
            let bound = NIOLoopBound(loop, eventLoop: eventLoop)
            let eventLoop = self.eventLoop
            inSlot(deadline: deadline) { channel in
                channel.deliver(event, deadline: deadline, on: eventLoop)
            }.whenComplete { [app, reachability = delivery.reachability] result in
                switch result {
                case .success(let outcome): bound.value.complete(key: key, outcome)
                case .failure(let error):
                    if case AppChannelError.unreachable = error { reachability.report(app) }
                    bound.value.complete(key: key, .retry("\(error)"))
                }
            }
        }

        private func pushBulk(
            _ entries: [(PubSubDelivery, AppTopicEvent)], path: String, deadline: NIODeadline, loop: DeliveryLoop
        ) {
            var metadata = spec.metadata
            metadata["pubsubName"] = spec.pubsubName
            let batch = AppBulkTopicEvent(
                id: UUID().uuidString.lowercased(), topic: spec.topic, pubsubName: spec.pubsubName, path: path,
                metadata: metadata,
                entries: entries.map { message, event in
                    AppBulkTopicEvent.Entry(
                        entryId: Self.key(message), event: event.event, envelope: event.envelope,
                        rawPayload: spec.rawPayload ? message.message.data : nil,
                        contentType: spec.rawPayload ? message.message.contentType : event.event.dataContentType,
                        metadata: event.metadata)
                })
            let keys = entries.map { Self.key($0.0) }
            let bound = NIOLoopBound(loop, eventLoop: eventLoop)
            let eventLoop = self.eventLoop
            inSlot(deadline: deadline) { channel in
                channel.deliverBulk(batch, deadline: deadline, on: eventLoop)
            }.whenComplete { [app, reachability = delivery.reachability] result in
                if case .failure(AppChannelError.unreachable) = result { reachability.report(app) }
                let loop = bound.value
                for key in keys {
                    switch result {
                    case .success(let outcomes):
                        loop.complete(key: key, outcomes[key] ?? .retry("the app answered nothing for this entry"))
                    case .failure(let error):
                        loop.complete(key: key, .retry("\(error)"))
                    }
                }
            }
        }
    }
}
