import Foundation
import NIOCore
import NIOEmbedded
import Testing

@testable import HangarRuntime
import HangarSync

@Suite("Quotas at the gate")
struct QuotaTests {
    static let orders = AppID(namespace: "team-a", appId: "orders")
    static let billing = AppID(namespace: "team-a", appId: "billing")
    static let other = AppID(namespace: "team-b", appId: "orders")

    static func configuration(
        tenant: Quotas = Quotas(), orders: Quotas? = nil, billingToken: String = "billing-token"
    ) -> NodeConfiguration {
        NodeConfiguration(
            tenants: [
                TenantSpec(
                    namespace: "team-a",
                    apps: [
                        AppSpec(appId: "orders", apiToken: "orders-token", quotas: orders),
                        AppSpec(appId: "billing", apiToken: billingToken),
                    ], quotas: tenant),
                TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders", apiToken: "other-token")]),
            ],
            components: [])
    }

    static func gate(_ configuration: NodeConfiguration, maxRequestBytes: Int = 1 << 20) -> Gate {
        Gate(registry: TenantRegistry(configuration: configuration, maxRequestBytes: maxRequestBytes))
    }

    func admit(_ gate: Gate, _ app: AppID, connection: (any Channel)? = nil) throws(APIError) -> Admission {
        try gate.admit(.app(app), token: nil, connection: connection)
    }

    func refusal(_ gate: Gate, _ app: AppID, connection: (any Channel)? = nil) -> APIError? {
        do {
            _ = try admit(gate, app, connection: connection)
            return nil
        } catch {
            return error
        }
    }

    @Test("requestsPerSecond with burst: the bucket empties, and the refusal says which quota and when to retry")
    func rateLimit() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(requestsPerSecond: 1, burst: 3)))
        for _ in 0..<3 { try admit(gate, Self.orders).finish() }
        let error = try #require(refusal(gate, Self.orders))
        #expect(error.rpcCode == .resourceExhausted)
        #expect(error.httpStatus == 429)
        #expect(error.reason == "HANGAR_QUOTA_EXCEEDED")
        #expect(error.errorMetadata["quota"] == "requestsPerSecond")
        #expect(error.errorMetadata["limit"] == "1")
        #expect(error.errorMetadata["scope"] == "tenant")
        #expect(Int(error.errorMetadata["retryAfterSeconds"] ?? "") ?? 0 >= 1)
        #expect(error.message.contains("tenant 'team-a'"))
        // Another tenant is untouched.
        try admit(gate, Self.other).finish()
    }

    @Test("the tenant's rate is a total shared by its apps")
    func tenantTotal() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(requestsPerSecond: 1, burst: 2)))
        try admit(gate, Self.orders).finish()
        try admit(gate, Self.billing).finish()
        #expect(refusal(gate, Self.orders)?.errorMetadata["quota"] == "requestsPerSecond")
        #expect(refusal(gate, Self.billing)?.errorMetadata["quota"] == "requestsPerSecond")
    }

    @Test("an app's own quota narrows it; a refusal by the app's quota takes nothing from the tenant's")
    func appQuotaAndAllOrNothing() throws {
        let gate = Self.gate(
            Self.configuration(
                tenant: Quotas(requestsPerSecond: 1, burst: 2), orders: Quotas(requestsPerSecond: 1, burst: 1)))
        try admit(gate, Self.orders).finish()
        let error = try #require(refusal(gate, Self.orders))
        #expect(error.errorMetadata["scope"] == "app")
        #expect(error.message.contains("app team-a/orders"))
        // The tenant still has its second token for billing.
        try admit(gate, Self.billing).finish()
        #expect(refusal(gate, Self.billing)?.errorMetadata["scope"] == "tenant")
    }

    @Test("maxConcurrentRequests counts calls in flight until they finish")
    func concurrency() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(maxConcurrentRequests: 2)))
        let first = try admit(gate, Self.orders)
        let second = try admit(gate, Self.billing)
        let error = try #require(refusal(gate, Self.orders))
        #expect(error.errorMetadata["quota"] == "maxConcurrentRequests")
        #expect(error.errorMetadata["limit"] == "2")
        first.finish()
        let third = try admit(gate, Self.orders)
        second.finish()
        third.finish()
        #expect(gate.registry.tenantAccount("team-a")?.inFlight == 0)
    }

    @Test("maxConnections counts each connection once, and frees its slot when it closes")
    func connections() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(maxConnections: 2)))
        let channels = (0..<3).map { _ in EmbeddedChannel() }
        try admit(gate, Self.orders, connection: channels[0]).finish()
        try admit(gate, Self.orders, connection: channels[0]).finish()
        try admit(gate, Self.orders, connection: channels[1]).finish()
        let error = try #require(refusal(gate, Self.orders, connection: channels[2]))
        #expect(error.errorMetadata["quota"] == "maxConnections")
        #expect(gate.registry.account(Self.orders)?.openConnections == 2)
        // Connections are per app: billing has its own.
        try admit(gate, Self.billing, connection: channels[2]).finish()
        _ = try channels[0].finish()
        try admit(gate, Self.orders, connection: channels[2]).finish()
        #expect(gate.registry.account(Self.orders)?.openConnections == 2)
    }

    @Test("maxSubscriptions is the tenant's total: refused at the limit, freed on release, default 1000")
    func subscriptions() throws {
        let registry = TenantRegistry(
            configuration: Self.configuration(tenant: Quotas(maxSubscriptions: 2)), maxRequestBytes: 1 << 20)
        let tenant = try #require(registry.tenantAccount("team-a"))
        #expect(tenant.acquireSubscription() == nil)
        #expect(tenant.acquireSubscription() == nil)
        let refusal = try #require(tenant.acquireSubscription())
        #expect(refusal.quota == "maxSubscriptions")
        #expect(refusal.limit == 2)
        #expect(refusal.scope == .tenant)
        #expect(tenant.subscriptions == 2)
        // Another tenant has its own count, with the default.
        let other = try #require(registry.tenantAccount("team-b"))
        #expect(other.acquireSubscription() == nil)
        #expect(Quotas.defaults.maxSubscriptions == 1000)
        tenant.releaseSubscription()
        #expect(tenant.acquireSubscription() == nil)
        #expect(tenant.acquireSubscription() != nil)
    }

    @Test("maxStreams counts streams apart from calls in flight, per app, and frees a slot when one ends")
    func streams() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(maxConcurrentRequests: 1, maxStreams: 2)))
        let first = try gate.admit(.app(Self.orders), token: nil, connection: nil, stream: true)
        _ = try gate.admit(.app(Self.orders), token: nil, connection: nil, stream: true)
        // Streams take no request slot: the tenant's one call in flight is still free.
        let call = try admit(gate, Self.orders)
        #expect(gate.registry.account(Self.orders)?.openStreams == 2)
        #expect(gate.registry.tenantAccount("team-a")?.inFlight == 1)
        do {
            _ = try gate.admit(.app(Self.orders), token: nil, connection: nil, stream: true)
            Issue.record("a third stream was admitted")
        } catch {
            #expect(error.rpcCode == .resourceExhausted)
            #expect(error.errorMetadata["quota"] == "maxStreams")
            #expect(error.errorMetadata["scope"] == "app")
        }
        // Per app: billing has its own.
        _ = try gate.admit(.app(Self.billing), token: "billing-token", connection: nil, stream: true)
        first.finish()
        call.finish()
        #expect(gate.registry.account(Self.orders)?.openStreams == 1)
        #expect(gate.registry.tenantAccount("team-a")?.inFlight == 0)
        _ = try gate.admit(.app(Self.orders), token: nil, connection: nil, stream: true)
    }

    @Test("maxRequestBytes: an app's override, never above the node's --max-request-bytes")
    func requestBytes() throws {
        let gate = Self.gate(
            Self.configuration(tenant: Quotas(maxRequestBytes: 1000), orders: Quotas(maxRequestBytes: 100)),
            maxRequestBytes: 500)
        let orders = try admit(gate, Self.orders)
        #expect(orders.maxRequestBytes == 100)
        let error = #expect(throws: APIError.self) { try orders.checkSize(101) }
        #expect(error?.errorMetadata["quota"] == "maxRequestBytes")
        #expect(error?.errorMetadata["limit"] == "100")
        #expect(error?.httpStatus == 413)
        #expect(try admit(gate, Self.billing).maxRequestBytes == 500)
    }

    @Test("a tenant that sets no quota gets the documented defaults")
    func defaults() throws {
        let gate = Self.gate(Self.configuration())
        var held: [Admission] = []
        for _ in 0..<Quotas.defaults.maxConcurrentRequests! { held.append(try admit(gate, Self.orders)) }
        #expect(refusal(gate, Self.orders)?.errorMetadata["quota"] == "maxConcurrentRequests")
        for admission in held { admission.finish() }
        #expect(Quotas.defaults.merged(over: Quotas()).burst == 10000)
    }

    @Test("reconfiguration: quotas change for new requests, tokens change, removed apps are refused, new apps admitted")
    func reconfiguration() throws {
        let gate = Self.gate(Self.configuration(tenant: Quotas(requestsPerSecond: 1, burst: 1)))
        try admit(gate, Self.orders).finish()
        #expect(refusal(gate, Self.orders) != nil)
        let inFlight = try admit(gate, Self.other)

        var next = Self.configuration(tenant: Quotas(requestsPerSecond: 1000, burst: 1000), billingToken: "new")
        next.tenants[1].apps = [AppSpec(appId: "payments")]
        let change = gate.registry.apply(next)
        #expect(change.added == [AppID(namespace: "team-b", appId: "payments")])
        #expect(change.removed == [Self.other])
        // The burst is not refilled by the change, but the new rate refills it within milliseconds.
        var admitted = false
        for _ in 0..<100 where !admitted {
            if let admission = try? admit(gate, Self.orders) {
                admission.finish()
                admitted = true
            }
            usleep(1000)
        }
        #expect(admitted)
        #expect(refusal(gate, Self.other)?.reason == "HANGAR_APP_REMOVED")
        inFlight.finish()  // a call admitted before the removal ends normally
        try admit(gate, AppID(namespace: "team-b", appId: "payments")).finish()
        #expect(throws: APIError.self) { try gate.admit(.tcp, token: "billing-token", connection: nil) }
        #expect(try gate.admit(.tcp, token: "new", connection: nil).caller.app == Self.billing)
    }

    @Test("a detached app is refused until it is removed and declared again")
    func detached() throws {
        let gate = Self.gate(Self.configuration())
        #expect(gate.registry.detach(Self.orders))
        #expect(refusal(gate, Self.orders)?.reason == "HANGAR_APP_DETACHED")
        try admit(gate, Self.billing).finish()
    }
}

@Suite("Fair queue of a component pool")
struct FairQueueTests {
    /// Records start order; operations finish only when the test says so.
    final class Recorder: Sendable {
        let started = Locked<[String]>([])
        func start(_ name: String) -> @Sendable () -> Void { { self.started.withLock { $0.append(name) } } }
        var order: [String] { started.withLock { $0 } }
    }

    @Test("tenants waiting for one slot are served in turn: a flooding tenant queues behind itself")
    func roundRobin() {
        let queue = FairQueue(capacity: 1)
        let recorder = Recorder()
        for index in 1...4 { queue.submit(tenant: "a", weight: 1, recorder.start("a\(index)")) }
        for index in 1...2 { queue.submit(tenant: "b", weight: 1, recorder.start("b\(index)")) }
        #expect(recorder.order == ["a1"])
        let finishing = ["a", "a", "b", "a", "b", "a"]
        for tenant in finishing { queue.finished(tenant: tenant) }
        #expect(recorder.order == ["a1", "a2", "b1", "a3", "b2", "a4"])
        #expect(queue.depths.isEmpty)
    }

    @Test("tryAcquire takes a free slot only when nobody waits, and respects the tenant's share")
    func tryAcquire() {
        let queue = FairQueue(capacity: 2, perTenant: 1)
        #expect(queue.tryAcquire(tenant: "a"))
        #expect(!queue.tryAcquire(tenant: "a"))  // a's share is 1
        #expect(queue.tryAcquire(tenant: "b"))
        #expect(!queue.tryAcquire(tenant: "c"))  // the pool is full
        let recorder = Recorder()
        queue.submit(tenant: "c", weight: 1, recorder.start("c1"))
        queue.finished(tenant: "a")
        #expect(recorder.order == ["c1"])  // the waiting tenant gets the freed slot
        #expect(!queue.tryAcquire(tenant: "a"))  // pool full again (b and c run)
        queue.finished(tenant: "b")
        queue.finished(tenant: "c")
        #expect(queue.depths.isEmpty)
    }

    @Test("every admitted operation is counted per tenant, with the time queued ones waited for their slot")
    func waits() async throws {
        let queue = FairQueue(capacity: 1)
        let recorder = Recorder()
        #expect(queue.tryAcquire(tenant: "a"))
        queue.submit(tenant: "b", weight: 1, recorder.start("b1"))
        try await Task.sleep(for: .milliseconds(50))
        queue.finished(tenant: "a")
        queue.finished(tenant: "b")
        let waits = queue.waits
        #expect(waits["a"] == PoolWaits(admitted: 1, waited: .zero))
        #expect(waits["b"]?.admitted == 1)
        #expect((waits["b"]?.waited ?? .zero) >= .milliseconds(50))
        #expect(queue.depths.isEmpty, "idle tenants leave the queue; their totals stay")
    }

    @Test("a weight of 2 starts two operations per turn")
    func weighted() {
        let queue = FairQueue(capacity: 1)
        let recorder = Recorder()
        queue.submit(tenant: "x", weight: 1, recorder.start("x0"))
        for index in 1...4 { queue.submit(tenant: "a", weight: 2, recorder.start("a\(index)")) }
        for index in 1...2 { queue.submit(tenant: "b", weight: 1, recorder.start("b\(index)")) }
        for tenant in ["x", "a", "a", "b", "a", "a", "b"] { queue.finished(tenant: tenant) }
        #expect(recorder.order == ["x0", "a1", "a2", "b1", "a3", "a4", "b2"])
    }

    @Test("one tenant never holds every slot: another tenant's operation starts at once")
    func perTenantCap() {
        let queue = FairQueue(capacity: 4)
        #expect(queue.perTenant == 3)
        let recorder = Recorder()
        for index in 1...10 { queue.submit(tenant: "a", weight: 1, recorder.start("a\(index)")) }
        #expect(recorder.order == ["a1", "a2", "a3"])
        queue.submit(tenant: "b", weight: 1, recorder.start("b1"))
        #expect(recorder.order == ["a1", "a2", "a3", "b1"])
        let depths = Dictionary(uniqueKeysWithValues: queue.depths.map { ($0.tenant, ($0.queued, $0.running)) })
        #expect(depths["a"]?.0 == 7)
        #expect(depths["a"]?.1 == 3)
        #expect(depths["b"]?.1 == 1)
    }
}
