package import Logging
package import NIOCore
import HangarSync

/// Push delivery: the `SubscriptionSink` that delivers each app's push subscriptions over its app channel. For
/// every app with an app channel and every subscription it is given (one per pubsub+topic, the first if several),
/// it runs a `PushSubscription`: the app's durable consumer of the topic in its own tenant (created at the end of
/// the log the first time), resolved under the component's scopes and topic scopes as a streaming subscription
/// is, and a delivery loop that pushes each message to the app.
///
/// It follows the app's channel (`AppChannels.observe`): no delivery while the app is unhealthy (its loops pause,
/// and resume when it is healthy again; what is published meanwhile waits in the log), none without a channel (a
/// channel removed stops its app's loops, messages in flight are given back; a channel added starts them again).
/// A subscription whose component is retired resumes on the component that replaces it, or stops; given again
/// (`setSubscriptions`), a stopped or refused subscription starts anew.
///
/// Deliveries take the app's `maxConcurrency` slots as invocations do (for gRPC apps too, which is stricter than
/// Dapr: reference §5.3, trap 17), and at most `window` messages are in flight per subscription, so an app that
/// never answers cannot grow the node's memory.
package final class PushDelivery: SubscriptionSink {
    /// The most messages in flight (pushed and not answered) per subscription, unless its bulk batches are bigger.
    package static let window = 100
    /// The largest window a bulk subscription's `maxMessagesCount` may ask for.
    package static let maxWindow = 1000
    /// How much longer than the delivery deadline a pushed message stays leased.
    static let leaseMargin: Duration = .seconds(5)

    /// What each subscription needs from the node.
    struct Context: Sendable {
        let api: PubSubAPI
        let channels: AppChannels
        let logger: Logger
        let deliveryTimeout: Duration
        let retryDelay: Duration
        let reachability: AppReachability
    }

    private struct Key: Hashable {
        var pubsubName: String
        var topic: String
    }

    private struct State {
        var specs: [AppID: [SubscriptionSpec]] = [:]
        var running: [AppID: [Key: PushSubscription]] = [:]
        var stopped = false
    }

    let context: Context
    private let group: any EventLoopGroup
    private let state = Locked(State())

    /// - Parameter deliveryTimeout: the deadline of each delivery (from when it is handed out: the wait for a slot
    ///   and the call). Dapr has none; 60 s, as the default invocation timeout.
    /// - Parameter retryDelay: how long after a RETRY (or an error) a message comes back; shorter only in tests.
    package init(
        pubsub: PubSubAPI, channels: AppChannels, eventLoopGroup: any EventLoopGroup, logger: Logger,
        deliveryTimeout: Duration = .seconds(60), retryDelay: Duration = DeliveryLoop.retryDelay
    ) {
        let reachability = AppReachability()
        self.context = Context(
            api: pubsub, channels: channels, logger: logger, deliveryTimeout: deliveryTimeout, retryDelay: retryDelay,
            reachability: reachability)
        self.group = eventLoopGroup
        channels.observe { [weak self] event in self?.channelChanged(event) }
        reachability.onUnreachable { [weak self] app in self?.appUnreachable(app) }
    }

    package func setSubscriptions(_ subscriptions: [SubscriptionSpec], for app: AppID) {
        state.withLock { $0.specs[app] = subscriptions.isEmpty ? nil : subscriptions }
        reconcile(app)
    }

    /// Stops every subscription (at shutdown): messages in flight are given back. Later changes start nothing.
    package func stopAll() {
        let all = state.withLock { state -> [PushSubscription] in
            state.stopped = true
            defer { state.running = [:] }
            return state.running.values.flatMap(\.values)
        }
        for subscription in all { subscription.stop() }
    }

    /// How many subscriptions run (started or starting), for tests and metrics.
    package var runningCount: Int { state.withLock { $0.running.values.reduce(0) { $0 + $1.count } } }

    /// The running subscription of `app` to `topic` on `pubsubName`, for tests.
    func subscription(_ app: AppID, pubsubName: String, topic: String) -> PushSubscription? {
        state.withLock { $0.running[app]?[Key(pubsubName: pubsubName, topic: topic)] }
    }

    private func channelChanged(_ event: AppChannelEvent) {
        switch event {
        case .added(let app), .removed(let app):
            reconcile(app)
        case .healthy(let app):
            for subscription in running(app) { subscription.resume() }
        case .unhealthy(let app):
            for subscription in running(app) { subscription.pause() }
        }
    }

    /// A delivery found `app` unreachable (nothing listens on its socket: it is not started yet, or restarting).
    /// Its subscriptions pause at once, rather than spend every message's attempts on an app that is not there,
    /// and the app is asked for its subscription list (cheap, and answered by every app that runs: an empty list,
    /// UNIMPLEMENTED and 404 all mean it is up) with backoff from 0.5 s to 10 s until it answers; then they resume.
    /// The deliveries that found it gone count one attempt each.
    private func appUnreachable(_ app: AppID) {
        context.logger.warning(
            "app unreachable: its push subscriptions pause until it answers again", metadata: ["app": "\(app)"])
        for subscription in running(app) { subscription.setReachable(false) }
        let channels = context.channels
        let reachability = context.reachability
        let eventLoop = group.next()
        Task {
            var delay = SubscriptionSources.initialRetry
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                guard let entry = channels.entry(app) else { break }
                do {
                    _ = try await entry.channel.listSubscriptions(deadline: .now() + .seconds(5), on: eventLoop).get()
                    break
                } catch AppChannelError.unreachable {
                    delay = min(delay * 2, SubscriptionSources.maxRetry)
                } catch {
                    break
                }
            }
            reachability.markReachable(app)
            self.context.logger.info("app reachable again: its push subscriptions resume", metadata: ["app": "\(app)"])
            for subscription in self.running(app) { subscription.setReachable(true) }
        }
    }

    private func running(_ app: AppID) -> [PushSubscription] {
        state.withLock { $0.running[app].map { Array($0.values) } ?? [] }
    }

    /// Brings `app`'s running subscriptions in line with its specs and its channel: stops those no longer wanted,
    /// changed, or ended by themselves, and starts those missing.
    private func reconcile(_ app: AppID) {
        let hasChannel = context.channels.entry(app) != nil
        let (stopping, starting) = state.withLock { state -> ([PushSubscription], [PushSubscription]) in
            var wanted: [Key: SubscriptionSpec] = [:]
            if hasChannel, !state.stopped {
                for spec in state.specs[app] ?? [] {
                    let key = Key(pubsubName: spec.pubsubName, topic: spec.topic)
                    if wanted[key] == nil { wanted[key] = spec }
                }
            }
            var running = state.running[app] ?? [:]
            var stopping: [PushSubscription] = []
            for (key, subscription) in running where wanted[key] != subscription.spec || subscription.hasEnded {
                stopping.append(subscription)
                running[key] = nil
            }
            var starting: [PushSubscription] = []
            for (key, spec) in wanted where running[key] == nil {
                let subscription = PushSubscription(app: app, spec: spec, eventLoop: group.next(), context: context)
                running[key] = subscription
                starting.append(subscription)
            }
            state.running[app] = running.isEmpty ? nil : running
            return (stopping, starting)
        }
        for subscription in stopping { subscription.stop() }
        for subscription in starting { subscription.start() }
    }
}

/// Which apps push delivery found unreachable, shared by every subscription: the first delivery that fails to reach
/// an app reports it once (`report`), and the probe that finds it again clears it.
final class AppReachability: Sendable {
    private let unreachable = Locked<Set<AppID>>([])
    private let handler = Locked<(@Sendable (AppID) -> Void)?>(nil)

    func onUnreachable(_ handler: @escaping @Sendable (AppID) -> Void) { self.handler.withLock { $0 = handler } }

    func isReachable(_ app: AppID) -> Bool { !unreachable.withLock { $0.contains(app) } }

    /// Marks `app` unreachable; the handler hears only the first report until `markReachable`.
    func report(_ app: AppID) {
        guard unreachable.withLock({ $0.insert(app).inserted }) else { return }
        handler.withLock { $0 }?(app)
    }

    func markReachable(_ app: AppID) { _ = unreachable.withLock { $0.remove(app) } }
}
