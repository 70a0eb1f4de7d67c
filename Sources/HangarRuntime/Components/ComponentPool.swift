import Foundation
package import HangarComponents
import Logging
package import NIOCore
import Synchronization
import HangarSync

/// One live component shared by every tenant allowed to use it, whatever its building block: its lifecycle
/// (open, health, retry, retire), its calls in flight and, for a blocking component, the fair queue between tenants.
///
/// Generic over the block's `TenantScope` rather than holding `any Sendable`: the component comes out typed
/// (`any StateStore`) with no cast on the per-call path, and the block's partitioning is read once from the spec.
/// Nothing here depends on what the block does with the component.
///
/// A pool is created before its component is open: one that executes inline opens at once; a blocking one is
/// `INIT` until `open` succeeds. A failed open leaves the pool `DOWN`; the component host's service tries again with
/// backoff until it succeeds or the pool is retired; calls meanwhile are refused with the block's `unavailable`.
package final class ComponentPool<Scope: TenantScope>: Sendable {
    package let spec: ComponentSpec
    /// What the spec's `secretKeyRef`s resolved to when the pool was made; masked in everything the pool shows.
    package let secrets: ResolvedSecrets
    /// The block's reading of the spec (state: the key prefix policy).
    package let partitioning: Scope.Partitioning
    let fairQueue: FairQueue?
    private let executesInline: Bool
    private let opener: ComponentDescriptor.Opener<Scope.Component>
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let inFlight = Atomic<Int>(0)
    /// Set once the pool is out of service; the last call in flight to finish then closes the component.
    private let retired = Atomic<Bool>(false)
    /// Set by the first close, so that a retired pool is closed and logged once.
    private let closing = Atomic<Bool>(false)

    private enum Phase {
        case initialising
        case up(Scope.Component)
        case down(String)
        case closed
    }

    private struct State {
        var phase: Phase = .initialising
        var attempts = 0
        var since = Date()
        /// When an open component's backend was first seen unreachable (`BackendHealthReporting`), nil while it
        /// answers.
        var backendDownSince: Date?
    }

    private let state = Locked(State())

    /// Operations a blocking component runs at once, unless its metadata sets `maxConcurrentOperations` or its
    /// type a default of its own (`ComponentDescriptor.defaultConcurrency`).
    static var defaultCapacity: Int { 8 }

    /// A pool for `spec`, of the type `descriptor` describes; its component is not opened yet. Refuses a spec the
    /// block or the factory finds invalid, naming its file and field.
    ///
    /// `secrets` are the values of the spec's `secretKeyRef`s: the factory reads them with the rest of the metadata,
    /// and the component gets a logger that masks them. When they did not resolve, or the factory refuses what they
    /// hold (a value, unlike the spec, can change without a reconfiguration), the pool is made anyway and stays DOWN
    /// with the error, masked: the rest of the node serves.
    init(
        spec: ComponentSpec, descriptor: ComponentDescriptor, context: ComponentContext,
        secrets: ResolvedSecrets = .none
    ) throws(ConfigurationError) {
        self.spec = spec
        self.secrets = secrets
        self.partitioning = try Scope.partitioning(of: spec)
        self.executesInline = descriptor.executesInline
        self.eventLoopGroup = context.eventLoopGroup
        self.logger = context.logger
        var definition = spec.definition
        var context = context
        if case .values(let values) = secrets {
            definition.metadata.merge(values) { _, resolved in resolved }
            context = ComponentContext(
                dataDirectory: context.dataDirectory, threadPool: context.threadPool,
                eventLoopGroup: context.eventLoopGroup,
                logger: RedactingLogHandler.wrapping(context.logger, secrets: secrets))
        }
        let opener: ComponentDescriptor.Opener<Scope.Component>?
        if case .failed(let reason) = secrets {
            opener = { throw ComponentInitError(reason) }
        } else {
            do {
                opener = try Scope.opener(descriptor.make, definition, context)
            } catch {
                guard case .values = secrets else {
                    throw ConfigurationError(path: spec.source, field: error.field, message: error.message)
                }
                let refused = ComponentInitError(secrets.redact("\(spec.source): \(error.field): \(error.message)"))
                opener = { throw refused }
            }
        }
        guard let opener else {
            throw ConfigurationError(
                path: spec.source, field: "spec.type",
                message: "component type '\(spec.type)' is not a \(Scope.block.rawValue) component")
        }
        self.opener = opener
        if descriptor.executesInline {
            fairQueue = nil
        } else {
            var capacity = descriptor.defaultConcurrency ?? Self.defaultCapacity
            if let text = spec.metadata["maxConcurrentOperations"] {
                guard let value = Int(text), (1...1024).contains(value) else {
                    throw ConfigurationError(
                        path: spec.source, field: "spec.metadata.maxConcurrentOperations",
                        message: "must be an integer from 1 to 1024, not '\(text)'")
                }
                capacity = value
            }
            fairQueue = FairQueue(capacity: capacity)
        }
    }

    /// The open component, or nil while the pool is not UP.
    package var component: Scope.Component? {
        state.withLock { state in
            if case .up(let component) = state.phase { return component }
            return nil
        }
    }

    /// The component's status. An open component whose backend does not answer now (`BackendHealthReporting`) is
    /// `DOWN` with the reason, and `UP` again, from the time it answers, without being reopened.
    package var health: ComponentHealth {
        let problem = (component as? any BackendHealthReporting)?.backendProblem.map(secrets.redact)
        return state.withLock { state in
            var (status, error, since): (ComponentStatus, String?, Date) =
                switch state.phase {
                case .initialising: (.initialising, nil, state.since)
                case .up: (.up, nil, state.since)
                case .down(let error): (.down, error, state.since)
                case .closed: (.down, "closed", state.since)
                }
            if case .up = state.phase {
                switch (problem, state.backendDownSince) {
                case (nil, nil): break
                case (nil, .some):
                    state.backendDownSince = nil
                    state.since = Date()
                    since = state.since
                case (.some(let problem), let down):
                    let downSince = down ?? Date()
                    state.backendDownSince = downSince
                    (status, error, since) = (.down, problem, downSince)
                }
            }
            return ComponentHealth(
                name: spec.name, namespace: spec.namespace, type: spec.type, status: status, error: error,
                attempts: state.attempts, since: since)
        }
    }

    /// The tenant-scoped handle for one caller, or nil while the component is not UP.
    func scope(for app: AppID, tenant: TenantAccount?) -> Scope? {
        guard let component else { return nil }
        return Scope(pool: self, component: component, app: app, tenant: tenant)
    }

    /// Runs one operation for a caller of `namespace`: at once for a component that executes inline, else through
    /// the fair queue. Counted in flight until it completes.
    package func run<T: Sendable>(
        _ component: Scope.Component, namespace: String, tenant: TenantAccount?, on eventLoop: any EventLoop,
        _ operation: @escaping @Sendable (Scope.Component) -> Eventual<T>
    ) -> Eventual<T> {
        inFlight.add(1, ordering: .relaxed)
        guard let fairQueue else {
            let outcome = operation(component)
            switch outcome {
            case .ready: finished()
            case .later(let future): future.whenComplete { _ in self.finished() }
            }
            return outcome
        }
        if fairQueue.tryAcquire(tenant: namespace) {
            let outcome = operation(component)
            outcome.whenComplete { _ in
                fairQueue.finished(tenant: namespace)
                self.finished()
            }
            return outcome
        }
        let promise = eventLoop.makePromise(of: T.self)
        fairQueue.submit(tenant: namespace, weight: tenant?.weight ?? 1) {
            operation(component).whenComplete { result in
                fairQueue.finished(tenant: namespace)
                self.finished()
                promise.completeWith(result)
            }
        }
        return .later(promise.futureResult)
    }

    /// One call is done; the last one of a retired pool closes it. Sequentially consistent with `retire`, so that
    /// of the last call and the retirement, at least one sees the other.
    private func finished() {
        let left = inFlight.subtract(1, ordering: .sequentiallyConsistent).newValue
        if left == 0, retired.load(ordering: .sequentiallyConsistent) {
            closeRetired(abandoned: 0)
        }
    }

    /// Calls running or queued now.
    package var callsInFlight: Int { inFlight.load(ordering: .relaxed) }

    /// Whether the component never blocks: it is opened at once, where it is created, and needs no fair queue.
    package var opensInline: Bool { executesInline }

    /// One initialisation attempt, blocking the calling thread for a component that does not execute inline.
    /// Returns the error when it failed (the pool is DOWN then).
    @discardableResult
    package func open() -> (any Error)? {
        if case .up = state.withLock({ $0.phase }) { return nil }
        let opened: Result<Scope.Component, any Error> = Result { try opener() }
        let leftOver = state.withLock { state -> Scope.Component? in
            switch (state.phase, opened) {
            case (.closed, .success(let component)), (.up, .success(let component)):
                // Retired while opening, or opened meanwhile by another attempt: this instance is never served.
                return component
            case (.closed, .failure), (.up, .failure):
                return nil
            case (.initialising, _), (.down, _):
                break
            }
            state.attempts += 1
            let before = state.phase
            switch opened {
            case .success(let component): state.phase = .up(component)
            case .failure(let error): state.phase = .down(secrets.redact("\(error)"))
            }
            // `since` is when the status last changed: not on a retry that fails again.
            if case .down = before, case .down = state.phase {} else { state.since = Date() }
            return nil
        }
        if let leftOver { _ = Scope.close(leftOver, on: eventLoopGroup.any()) }
        if case .failure(let error) = opened {
            return secrets == .none ? error : ComponentInitError(secrets.redact("\(error)"))
        }
        return nil
    }

    /// Whether the open component no longer matches its source (`TenantScope.sourceChanged`), or is not open:
    /// a reconfiguration then makes a new instance rather than keep this one.
    package var isStale: Bool {
        guard let component else { return true }
        return Scope.sourceChanged(of: component)
    }

    /// Operations waiting and running in this pool, per tenant (empty for a component that executes inline).
    package var queueDepths: [(tenant: String, queued: Int, running: Int)] { fairQueue?.depths ?? [] }

    package var queueWaits: [String: PoolWaits] { fairQueue?.waits ?? [:] }

    package var slots: Int? { fairQueue?.capacity }

    package var backendConnections: Int? { (component as? any BackendHealthReporting)?.backendConnections }

    /// Bytes stored per tenant (nothing while the component is not open).
    package var storedBytes: [String: Int] { component.map(Scope.usageByPartition(of:)) ?? [:] }

    /// The open component's optional features, as Dapr names them (none while it is not open).
    package var capabilities: [String] { component.map(Scope.capabilities(of:)) ?? [] }

    /// Stops retrying and closes the component now, if it is open.
    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        retired.store(true, ordering: .sequentiallyConsistent)
        closing.store(true, ordering: .releasing)
        let component = state.withLock { state -> Scope.Component? in
            defer { state.phase = .closed }
            if case .up(let component) = state.phase { return component }
            return nil
        }
        guard let component else { return eventLoop.makeSucceededVoidFuture() }
        return Scope.close(component, on: eventLoop)
    }

    /// Whether the pool is out of service (retired or closed): it is no longer reopened.
    package var isRetired: Bool { retired.load(ordering: .acquiring) }

    /// Takes the pool out of service after it was replaced or removed: it is closed when its last call in flight
    /// is done, at once when there is none. Returns whether calls are still in flight (the host then closes it at
    /// its retire timeout with `expire()` at the latest).
    package func retire() -> Bool {
        guard !retired.exchange(true, ordering: .sequentiallyConsistent) else { return false }
        if inFlight.load(ordering: .sequentiallyConsistent) == 0 {
            closeRetired(abandoned: 0)
            return false
        }
        return true
    }

    /// Closes a retired pool whose calls outlived the retire timeout, abandoning them; nothing when it is closed.
    package func expire() {
        closeRetired(abandoned: inFlight.load(ordering: .acquiring))
    }

    /// Closes a retired pool once (the last call, the timeout and the node's shutdown may all try) and logs it.
    private func closeRetired(abandoned: Int) {
        guard !closing.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let spec = self.spec
        let logger = self.logger
        close(on: eventLoopGroup.any()).whenComplete { _ in
            var metadata = ComponentHost.metadata(spec)
            metadata["calls.abandoned"] = "\(abandoned)"
            logger.info("component closed", metadata: metadata)
        }
    }
}
