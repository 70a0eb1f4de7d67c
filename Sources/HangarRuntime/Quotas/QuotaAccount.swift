package import NIOCore
import HangarSync

/// A token bucket: `rate` tokens a second up to `capacity`; a request takes one.
struct TokenBucket: Sendable {
    var rate: Double
    var capacity: Double
    var tokens: Double
    var stamp: UInt64

    init(rate: Int, burst: Int, now: UInt64) {
        self.rate = Double(rate)
        self.capacity = Double(max(burst, 1))
        self.tokens = capacity
        self.stamp = now
    }

    mutating func refill(_ now: UInt64) {
        guard now > stamp else { return }
        tokens = min(capacity, tokens + Double(now - stamp) / 1e9 * rate)
        stamp = now
    }

    /// Whole seconds until one token is available (at least 1, as `Retry-After` counts in seconds).
    var retryAfterSeconds: Int { max(1, Int(((1 - tokens) / rate).rounded(.up))) }

    /// New limits; the tokens held are kept, up to the new capacity.
    mutating func reconfigure(rate: Int, burst: Int) {
        self.rate = Double(rate)
        self.capacity = Double(max(burst, 1))
        tokens = min(tokens, capacity)
    }

    static func make(_ quotas: Quotas, now: UInt64, previous: TokenBucket?) -> TokenBucket? {
        guard let rate = quotas.requestsPerSecond else { return nil }
        let burst = quotas.burst ?? rate
        guard var bucket = previous else { return TokenBucket(rate: rate, burst: burst, now: now) }
        bucket.reconfigure(rate: rate, burst: burst)
        return bucket
    }
}

/// Why the gate refused a request: the quota, its limit, and whether it is the tenant's or the app's.
package struct QuotaRefusal: Sendable, Hashable {
    package enum Scope: String, Sendable { case tenant, app }

    package var quota: String
    package var limit: Int
    package var scope: Scope
    package var retryAfterSeconds: Int

    package init(quota: String, limit: Int, scope: Scope, retryAfterSeconds: Int = 1) {
        self.quota = quota
        self.limit = limit
        self.scope = scope
        self.retryAfterSeconds = retryAfterSeconds
    }
}

/// The live quota state of one tenant: its totals, shared by all its apps. Survives reconfiguration (a changed
/// quota applies to new requests; tokens and calls in flight carry over).
package final class TenantAccount: Sendable {
    struct State {
        var bucket: TokenBucket?
        var maxConcurrentRequests: Int?
        var inFlight = 0
        var weight: Int
        var maxStateBytes: Int?
        var maxPubsubBytes: Int?
        var maxSubscriptions: Int?
        /// Subscriptions held now (streaming and push), against `maxSubscriptions`.
        var subscriptions = 0
    }

    package let namespace: String
    let state: Locked<State>
    /// The tenant's buffered request bytes, against its `maxBufferedBytes` and the node's budget.
    package let buffers: BufferAccount

    init(_ tenant: TenantSpec, effective quotas: Quotas, now: UInt64, buffers node: BufferBudget) {
        namespace = tenant.namespace
        buffers = BufferAccount(
            namespace: tenant.namespace, limit: quotas.maxBufferedBytes ?? Int.max, node: node)
        state = Locked(
            State(
                bucket: TokenBucket.make(quotas, now: now, previous: nil),
                maxConcurrentRequests: quotas.maxConcurrentRequests, weight: tenant.weight,
                maxStateBytes: quotas.maxStateBytes, maxPubsubBytes: quotas.maxPubsubBytes,
                maxSubscriptions: quotas.maxSubscriptions))
    }

    func update(_ tenant: TenantSpec, effective quotas: Quotas, now: UInt64) {
        buffers.setLimit(quotas.maxBufferedBytes ?? Int.max)
        state.withLock { state in
            state.bucket = TokenBucket.make(quotas, now: now, previous: state.bucket)
            state.maxConcurrentRequests = quotas.maxConcurrentRequests
            state.weight = tenant.weight
            state.maxStateBytes = quotas.maxStateBytes
            state.maxPubsubBytes = quotas.maxPubsubBytes
            state.maxSubscriptions = quotas.maxSubscriptions
        }
    }

    /// The tenant's share of a contended component pool.
    package var weight: Int { state.withLock { $0.weight } }
    /// Bytes the tenant may store in each state store.
    package var maxStateBytes: Int? { state.withLock { $0.maxStateBytes } }
    /// Bytes the tenant's topics may retain in each pub/sub component.
    package var maxPubsubBytes: Int? { state.withLock { $0.maxPubsubBytes } }
    package var inFlight: Int { state.withLock { $0.inFlight } }
    /// Subscriptions the tenant holds now.
    package var subscriptions: Int { state.withLock { $0.subscriptions } }

    /// Takes one of the tenant's `maxSubscriptions`, or says why not. Every success must be matched by exactly one
    /// `releaseSubscription()` when the subscription ends. A lowered quota does not end subscriptions held: it
    /// refuses new ones until the count is under it.
    package func acquireSubscription() -> QuotaRefusal? {
        state.withLock { state in
            if let limit = state.maxSubscriptions, state.subscriptions >= limit {
                return QuotaRefusal(quota: "maxSubscriptions", limit: limit, scope: .tenant)
            }
            state.subscriptions += 1
            return nil
        }
    }

    /// Gives back a subscription taken with `acquireSubscription()`.
    package func releaseSubscription() {
        state.withLock { $0.subscriptions = max(0, $0.subscriptions - 1) }
    }
}

/// The live quota state of one app: its own budget (when its `quotas` set one), its connections, whether it is
/// still served, and the tenant account it draws on.
package final class AppAccount: Sendable {
    package enum Status: Sendable, Hashable {
        case active
        /// The app called `Shutdown`.
        case detached
        /// The app is no longer in the configuration.
        case removed
    }

    struct State {
        var bucket: TokenBucket?
        var maxConcurrentRequests: Int?
        var maxConnections: Int?
        var maxStreams: Int?
        var maxRequestBytes: Int
        var inFlight = 0
        /// Long-lived streams open: counted against `maxStreams` instead of `inFlight`.
        var streams = 0
        var connections: Set<ObjectIdentifier> = []
        var status = Status.active
    }

    /// What the gate learns from an admitted request.
    enum Outcome {
        case admitted(maxRequestBytes: Int, newConnection: Bool)
        case refused(QuotaRefusal)
        case inactive(Status)
    }

    package let app: AppID
    package let tenant: TenantAccount
    let state: Locked<State>

    init(app: AppID, tenant: TenantAccount, own: Quotas, effective: Quotas, nodeMaxRequestBytes: Int, now: UInt64) {
        self.app = app
        self.tenant = tenant
        state = Locked(State(maxRequestBytes: nodeMaxRequestBytes))
        update(own: own, effective: effective, nodeMaxRequestBytes: nodeMaxRequestBytes, now: now)
    }

    /// `own`: the app's `quotas` only (its own rate and concurrency budget); `effective`: merged over the tenant's
    /// and the defaults (request size and connections).
    func update(own: Quotas, effective: Quotas, nodeMaxRequestBytes: Int, now: UInt64) {
        state.withLock { state in
            state.bucket = TokenBucket.make(own, now: now, previous: state.bucket)
            state.maxConcurrentRequests = own.maxConcurrentRequests
            state.maxConnections = effective.maxConnections
            state.maxStreams = effective.maxStreams
            state.maxRequestBytes = min(effective.maxRequestBytes ?? nodeMaxRequestBytes, nodeMaxRequestBytes)
        }
    }

    func setStatus(_ status: Status) -> Bool {
        state.withLock { state in
            guard state.status == .active else { return false }
            state.status = status
            return true
        }
    }

    package var status: Status { state.withLock { $0.status } }
    package var openConnections: Int { state.withLock { $0.connections.count } }

    /// Takes a request slot from the app's and the tenant's budgets, all or nothing, and counts `connection` as one
    /// of the app's connections if it is not already. A `stream` (a long-lived call) takes a slot of the app's
    /// `maxStreams` instead of a request in flight; rate limits apply to both.
    func admit(connection: ObjectIdentifier?, now: UInt64, stream: Bool = false) -> Outcome {
        state.withLock { state in
            guard state.status == .active else { return .inactive(state.status) }
            var newConnection = false
            if let connection, !state.connections.contains(connection) {
                if let limit = state.maxConnections, state.connections.count >= limit {
                    return .refused(QuotaRefusal(quota: "maxConnections", limit: limit, scope: .app))
                }
                newConnection = true
            }
            if stream {
                if let limit = state.maxStreams, state.streams >= limit {
                    return .refused(QuotaRefusal(quota: "maxStreams", limit: limit, scope: .app))
                }
            } else if let limit = state.maxConcurrentRequests, state.inFlight >= limit {
                return .refused(QuotaRefusal(quota: "maxConcurrentRequests", limit: limit, scope: .app))
            }
            if state.bucket != nil {
                state.bucket!.refill(now)
                if state.bucket!.tokens < 1 {
                    return .refused(
                        QuotaRefusal(
                            quota: "requestsPerSecond", limit: Int(state.bucket!.rate), scope: .app,
                            retryAfterSeconds: state.bucket!.retryAfterSeconds))
                }
            }
            let tenantRefusal = tenant.state.withLock { tenant -> QuotaRefusal? in
                if !stream, let limit = tenant.maxConcurrentRequests, tenant.inFlight >= limit {
                    return QuotaRefusal(quota: "maxConcurrentRequests", limit: limit, scope: .tenant)
                }
                if tenant.bucket != nil {
                    tenant.bucket!.refill(now)
                    if tenant.bucket!.tokens < 1 {
                        return QuotaRefusal(
                            quota: "requestsPerSecond", limit: Int(tenant.bucket!.rate), scope: .tenant,
                            retryAfterSeconds: tenant.bucket!.retryAfterSeconds)
                    }
                    tenant.bucket!.tokens -= 1
                }
                if !stream { tenant.inFlight += 1 }
                return nil
            }
            if let tenantRefusal { return .refused(tenantRefusal) }
            if state.bucket != nil { state.bucket!.tokens -= 1 }
            if stream { state.streams += 1 } else { state.inFlight += 1 }
            if let connection, newConnection { state.connections.insert(connection) }
            return .admitted(maxRequestBytes: state.maxRequestBytes, newConnection: newConnection)
        }
    }

    /// Ends a request admitted by `admit`.
    func finish(stream: Bool = false) {
        guard !stream else { return state.withLock { $0.streams -= 1 } }
        state.withLock { $0.inFlight -= 1 }
        tenant.state.withLock { $0.inFlight -= 1 }
    }

    /// Long-lived streams the app has open.
    package var openStreams: Int { state.withLock { $0.streams } }

    /// Counts a connection when it is accepted; false when the app is at `maxConnections` (or no longer served).
    func openConnection(_ connection: ObjectIdentifier) -> Bool {
        state.withLock { state in
            guard state.status == .active else { return false }
            if state.connections.contains(connection) { return true }
            if let limit = state.maxConnections, state.connections.count >= limit { return false }
            state.connections.insert(connection)
            return true
        }
    }

    func closeConnection(_ connection: ObjectIdentifier) {
        _ = state.withLock { $0.connections.remove(connection) }
    }

    /// Counts `channel` as one of this app's connections until it closes; false when over `maxConnections`.
    package func track(_ channel: any Channel) -> Bool {
        let id = ObjectIdentifier(channel)
        guard openConnection(id) else { return false }
        channel.closeFuture.whenComplete { _ in self.closeConnection(id) }
        return true
    }

    package var maxConnections: Int? { state.withLock { $0.maxConnections } }
}
