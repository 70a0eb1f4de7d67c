package import Logging
package import NIOCore
import HangarSync

/// The app channels of every app that declares one, kept in step with the configuration: a channel is built when
/// its app appears or its `appChannel` changes, and closed when the app goes. Holds each app's health (from its
/// `healthCheck` probes) and its `maxConcurrency` slots.
package final class AppChannels: Sendable {
    /// One app's channel, its health and its slots.
    final class Entry: Sendable {
        let spec: AppChannelSpec
        let channel: any AppChannel
        /// The channel, when it can stream an invocation's bodies (found once, not at every call).
        let streaming: (any StreamingAppChannel)?
        /// Healthy until `threshold` probes in a row fail; a single success makes it healthy again.
        private let probe = Locked<(healthy: Bool, failures: Int, due: NIODeadline, running: Bool)>(
            (true, 0, .now(), false))
        private let slots: Locked<(inFlight: Int, waiting: CircularBuffer<EventLoopPromise<Void>>)> = Locked((0, []))

        init(spec: AppChannelSpec, channel: any AppChannel) {
            self.spec = spec
            self.channel = channel
            self.streaming = channel as? any StreamingAppChannel
        }

        var isHealthy: Bool { probe.withLock { $0.healthy } }

        /// A slot for one call: at once while fewer than `maxConcurrency` calls run, else in arrival order.
        func acquire(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
            guard let limit = spec.maxConcurrency else { return eventLoop.makeSucceededVoidFuture() }
            return slots.withLock { slots -> EventLoopFuture<Void> in
                if slots.inFlight < limit {
                    slots.inFlight += 1
                    return eventLoop.makeSucceededVoidFuture()
                }
                let promise = eventLoop.makePromise(of: Void.self)
                slots.waiting.append(promise)
                return promise.futureResult
            }
        }

        /// Returns a slot, handing it to the oldest waiting call.
        func release() {
            guard spec.maxConcurrency != nil else { return }
            let next = slots.withLock { slots -> EventLoopPromise<Void>? in
                if let next = slots.waiting.popFirst() { return next }
                slots.inFlight -= 1
                return nil
            }
            next?.succeed()
        }

        /// Starts a probe when one is due; `report` is called with the new health when it changes.
        func probeIfDue(now: NIODeadline, on eventLoop: any EventLoop, report: @escaping @Sendable (Bool) -> Void) {
            guard let check = spec.healthCheck else { return }
            let start = probe.withLock { state -> Bool in
                guard !state.running, state.due <= now else { return false }
                state.running = true
                state.due = now + TimeAmount(check.interval)
                return true
            }
            guard start else { return }
            channel.checkHealth(path: check.path, deadline: now + TimeAmount(check.timeout), on: eventLoop).whenComplete { result in
                let changed = self.probe.withLock { state -> Bool? in
                    state.running = false
                    let wasHealthy = state.healthy
                    switch result {
                    case .success:
                        state.failures = 0
                        state.healthy = true
                    case .failure:
                        state.failures += 1
                        if state.failures >= check.threshold { state.healthy = false }
                    }
                    return wasHealthy != state.healthy ? state.healthy : nil
                }
                if let changed { report(changed) }
            }
        }
    }

    private let factory: AppChannelFactory?
    private let entries = Locked<[AppID: Entry]>([:])
    private let observers = Locked<[@Sendable (AppChannelEvent) -> Void]>([])
    private let logger: Logger

    package init(factory: AppChannelFactory?, logger: Logger) {
        self.factory = factory
        self.logger = logger
    }

    /// Builds, replaces and closes channels for `configuration`'s apps. Observers hear of every channel closed
    /// (`.removed`) before any channel built (`.added`); a replaced channel is both.
    package func update(_ configuration: NodeConfiguration) {
        guard let factory else { return }
        var wanted: [AppID: AppChannelSpec] = [:]
        for (id, spec, _) in configuration.apps {
            if let channel = spec.appChannel { wanted[id] = channel }
        }
        let (closed, added) = entries.withLock { entries -> ([(AppID, Entry)], [AppID]) in
            var closed: [(AppID, Entry)] = []
            var added: [AppID] = []
            for (id, entry) in entries where wanted[id] != entry.spec {
                closed.append((id, entry))
                entries[id] = nil
            }
            for (id, spec) in wanted where entries[id] == nil {
                if let channel = factory(id, spec) {
                    entries[id] = Entry(spec: spec, channel: channel)
                    added.append(id)
                }
            }
            return (closed, added)
        }
        for (_, entry) in closed { entry.channel.close() }
        for (id, _) in closed { notify(.removed(id)) }
        for id in added { notify(.added(id)) }
    }

    /// Calls `observer` for every later change of a channel's presence or health, on whatever thread made the
    /// change (it must be quick and must not block). Observers live as long as the node.
    package func observe(_ observer: @escaping @Sendable (AppChannelEvent) -> Void) {
        observers.withLock { $0.append(observer) }
    }

    /// Whether `app`'s channel is healthy now; nil when it has no channel.
    package func isHealthy(_ app: AppID) -> Bool? { entry(app)?.isHealthy }

    private func notify(_ event: AppChannelEvent) {
        for observer in observers.withLock({ $0 }) { observer(event) }
    }

    /// The channel of `app`, nil when it declares none.
    func entry(_ app: AppID) -> Entry? { entries.withLock { $0[app] } }

    /// Probes every app with a `healthCheck` at its interval until the calling task is cancelled (the node runs
    /// it in its task group).
    package func watchHealth(on group: any EventLoopGroup) async {
        while !Task.isCancelled {
            let now = NIODeadline.now()
            for (app, entry) in entries.withLock({ Array($0) }) {
                entry.probeIfDue(now: now, on: group.next()) { [logger] healthy in
                    self.notify(healthy ? .healthy(app) : .unhealthy(app))
                    if healthy {
                        logger.info("app is healthy", metadata: ["app": "\(app)"])
                    } else {
                        logger.warning("app is unhealthy: calls into it fail at once", metadata: ["app": "\(app)"])
                    }
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Closes every channel (at shutdown). Observers are not told: the node is stopping.
    package func closeAll() {
        let all = entries.withLock { entries in
            defer { entries.removeAll() }
            return Array(entries.values)
        }
        for entry in all { entry.channel.close() }
    }
}

/// A change of an app channel, as `AppChannels.observe` reports it.
package enum AppChannelEvent: Sendable, Hashable {
    /// The app's channel was built (at start-up, when the app appeared or its `appChannel` changed). It starts
    /// healthy: an app without `healthCheck` is always taken to be.
    case added(AppID)
    /// The app's channel was closed (the app went, or its `appChannel` changed and a new one follows).
    case removed(AppID)
    /// Its health probes succeed again after it was unhealthy.
    case healthy(AppID)
    /// Its health probes failed `threshold` times in a row.
    case unhealthy(AppID)
}
