import Logging
import NIOCore
import HangarSync

/// Where each app's push subscriptions come from, and what it has in effect: the node's `Subscription` resources
/// that apply to it (`NodeConfiguration.declarativeSubscriptions(for:)`) overridden, per pubsub+topic, by its
/// programmatic list, fetched over its app channel (reference §2a, §2b). The effective set goes to the
/// `SubscriptionSink` (delivery) whenever it changes, and to `GetMetadata`.
///
/// When the programmatic list is fetched: when the app's channel appears (at start-up, when the app is added or its
/// `appChannel` changes) and whenever the app becomes healthy again after being unhealthy. That second fetch is a
/// knowing departure from Dapr, which fetches once per sidecar: a Hangar daemon outlives the app's processes, and
/// a restarted app may subscribe differently. An app that does not answer (apps often start after hangard) is asked
/// again with exponential backoff from 0.5 s to at most 10 s, until it answers; an answer that is no list (gRPC
/// UNIMPLEMENTED, HTTP 404) is no programmatic subscriptions.
///
/// The sink hears only of apps that have an app channel (push delivery needs one; an app whose channel goes has no
/// push subscriptions until it returns), and not of health: an unhealthy app keeps its set, and delivery finds its
/// calls into it refused at once. Metadata lists the declarative subscriptions of apps without a channel too, as
/// Dapr lists what it loaded.
///
/// Every call into the sink is made from `run()`, one at a time, in the order of the changes.
package final class SubscriptionSources: Sendable {
    /// The first wait before asking an unreachable app again, and the longest.
    package static let initialRetry: Duration = .milliseconds(500)
    package static let maxRetry: Duration = .seconds(10)
    /// How long one request for the list may take.
    static let fetchTimeout = TimeAmount.seconds(5)

    private struct AppState {
        var declarative: [SubscriptionSpec] = []
        /// nil until fetched (or since the channel went).
        var programmatic: [SubscriptionSpec]?
        var hasChannel = false
        /// In the configuration; an app that went stays until the sink has heard it has nothing.
        var configured = false
        /// Bumped by every event that starts a fetch or drops the channel, so that an older fetch stops.
        var generation = 0
        /// What the sink last received for the app.
        var pushed: [SubscriptionSpec] = []
    }

    private struct State {
        var apps: [AppID: AppState] = [:]
        var sink: (any SubscriptionSink)?
        var configuration: NodeConfiguration?
    }

    private enum Command: Sendable {
        case fetch(AppID, generation: Int)
        case push
    }

    private let channels: AppChannels
    private let group: any EventLoopGroup
    private let logger: Logger
    private let state = Locked(State())
    private let commands: AsyncStream<Command>
    private let continuation: AsyncStream<Command>.Continuation

    /// Observes `channels` (before they are built, so that no `.added` is missed).
    init(channels: AppChannels, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.channels = channels
        self.group = eventLoopGroup
        self.logger = logger
        (commands, continuation) = AsyncStream.makeStream(of: Command.self)
        channels.observe { [weak self] event in self?.channelChanged(event) }
    }

    /// Sets the sink that delivery provides (nil: none); it receives every app's current set at once, from `run()`.
    package func setSink(_ sink: (any SubscriptionSink)?) {
        state.withLock { state in
            state.sink = sink
            for app in state.apps.keys { state.apps[app]?.pushed = [] }
        }
        continuation.yield(.push)
    }

    /// The push subscriptions `app` has in effect (declarative ones overridden by its programmatic ones), for
    /// metadata: listed whether or not the app has a channel.
    package func subscriptions(for app: AppID) -> [SubscriptionSpec] {
        guard let app = state.withLock({ $0.apps[app] }) else { return [] }
        return Self.effective(declarative: app.declarative, programmatic: app.programmatic ?? [])
    }

    /// Merges an app's two sources as Dapr does: declaratives in order, a programmatic subscription replacing the
    /// declarative one of the same pubsub+topic in its place, or appended (a later programmatic entry for the same
    /// pubsub+topic replacing an earlier one).
    package static func effective(declarative: [SubscriptionSpec], programmatic: [SubscriptionSpec])
        -> [SubscriptionSpec]
    {
        var merged = declarative
        var index: [String: Int] = [:]
        for (position, spec) in merged.enumerated() { index[spec.pubsubName + "||" + spec.topic] = position }
        for spec in programmatic {
            let key = spec.pubsubName + "||" + spec.topic
            if let position = index[key] {
                merged[position] = spec
            } else {
                index[key] = merged.count
                merged.append(spec)
            }
        }
        return merged
    }

    /// Takes the declarative subscriptions of a new configuration (at start-up and on every reload): logs the
    /// Subscription resources that became invalid and those another one hides for some app, and lets the sink know
    /// of every app whose set changed.
    func update(_ configuration: NodeConfiguration) {
        let previous = state.withLock { $0.configuration }
        let before = Set((previous?.subscriptions ?? []).filter { $0.error != nil })
        for resource in configuration.subscriptions where resource.error != nil && !before.contains(resource) {
            logger.error(
                "Subscription resource invalid; it applies to no app",
                metadata: [
                    "subscription": "\(resource.key)", "config.path": "\(resource.source)",
                    "error": "\(resource.error.map { "\($0)" } ?? "")",
                ])
        }
        var declared: [AppID: [SubscriptionSpec]] = [:]
        for (app, _, _) in configuration.apps {
            let (subscriptions, shadowed) = configuration.declarativeSubscriptions(for: app)
            declared[app] = subscriptions
            let old = previous.map { $0.declarativeSubscriptions(for: app).shadowed.map { $0.resource } } ?? []
            for (resource, first) in shadowed where !old.contains(resource) {
                logger.warning(
                    "Subscription resource ignored for this app: another one for the same pubsub and topic comes first",
                    metadata: [
                        "app": "\(app)", "subscription": "\(resource.key)", "config.path": "\(resource.source)",
                        "subscription.used": "\(first.key)", "subscription.used.path": "\(first.source)",
                    ])
            }
        }
        state.withLock { state in
            state.configuration = configuration
            for app in state.apps.keys where declared[app] == nil {
                state.apps[app]?.configured = false
                state.apps[app]?.declarative = []
            }
            for (app, subscriptions) in declared {
                state.apps[app, default: AppState()].declarative = subscriptions
                state.apps[app]?.configured = true
            }
        }
        continuation.yield(.push)
    }

    private func channelChanged(_ event: AppChannelEvent) {
        switch event {
        case .added(let app), .healthy(let app):
            let generation = state.withLock { state -> Int in
                state.apps[app, default: AppState()].hasChannel = true
                state.apps[app]?.generation += 1
                return state.apps[app]?.generation ?? 0
            }
            continuation.yield(.fetch(app, generation: generation))
        case .removed(let app):
            state.withLock { state in
                state.apps[app]?.hasChannel = false
                state.apps[app]?.programmatic = nil
                state.apps[app]?.generation += 1
            }
            continuation.yield(.push)
        case .unhealthy:
            break
        }
    }

    /// Fetches programmatic lists and calls the sink until the calling task is cancelled (the node runs it in its
    /// service group, before the app channels close).
    package func run() async {
        await withDiscardingTaskGroup { tasks in
            for await command in commands {
                switch command {
                case .fetch(let app, let generation):
                    tasks.addTask { await self.fetch(app, generation: generation) }
                case .push:
                    push()
                }
            }
            tasks.cancelAll()
        }
    }

    /// Asks `app` for its list until it answers, the task is cancelled, or a newer event supersedes this fetch.
    private func fetch(_ app: AppID, generation: Int) async {
        var delay = Self.initialRetry
        var failures = 0
        while !Task.isCancelled {
            guard state.withLock({ $0.apps[app]?.generation == generation }), let entry = channels.entry(app) else {
                return
            }
            do {
                let list = try await entry.channel.listSubscriptions(
                    deadline: .now() + Self.fetchTimeout, on: group.next()
                ).get()
                for problem in list.problems {
                    logger.warning("programmatic subscription: \(problem)", metadata: ["app": "\(app)"])
                }
                let current = state.withLock { state -> Bool in
                    guard state.apps[app]?.generation == generation else { return false }
                    state.apps[app]?.programmatic = list.subscriptions
                    return true
                }
                if current {
                    logger.info(
                        "programmatic subscriptions fetched",
                        metadata: ["app": "\(app)", "subscriptions": "\(list.subscriptions.count)"])
                    continuation.yield(.push)
                }
                return
            } catch {
                failures += 1
                // The first failure is worth a warning; an app that is not up yet would otherwise fill the log.
                logger.log(
                    level: failures == 1 ? .warning : .debug,
                    "cannot fetch the app's programmatic subscriptions yet; retrying",
                    metadata: ["app": "\(app)", "error": "\(error)", "retry.in": "\(delay)"])
            }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, Self.maxRetry)
        }
    }

    /// Hands the sink every app's set that changed since it last heard.
    private func push() {
        let (sink, changes) = state.withLock { state -> ((any SubscriptionSink)?, [(AppID, [SubscriptionSpec])]) in
            var changes: [(AppID, [SubscriptionSpec])] = []
            for (app, entry) in state.apps {
                let wanted =
                    entry.hasChannel && entry.configured
                    ? Self.effective(declarative: entry.declarative, programmatic: entry.programmatic ?? []) : []
                if state.sink != nil, wanted != entry.pushed {
                    changes.append((app, wanted))
                    state.apps[app]?.pushed = wanted
                }
                // An app that went, once the sink knows it has nothing, is forgotten.
                if !entry.configured, !entry.hasChannel, state.apps[app]?.pushed.isEmpty == true {
                    state.apps[app] = nil
                }
            }
            return (state.sink, changes)
        }
        guard let sink else { return }
        for (app, subscriptions) in changes { sink.setSubscriptions(subscriptions, for: app) }
    }
}
