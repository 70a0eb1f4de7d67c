import Foundation
import HangarComponents
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import HangarRuntime
import HangarSync

/// The generic component pool and the host's shared lookup, with test components: the lifecycle (INIT, UP, DOWN
/// and retried), calls in flight, retirement after a swap, and the lookup's three refusals.
@Suite("Component pools")
struct ComponentPoolTests {
    static let loop = MultiThreadedEventLoopGroup.singleton.next()
    static let orders = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)

    /// A blocking store whose reads wait until `release()`, and which records being closed.
    final class GatedStore: StateStore {
        let features: StateFeatures = []
        let executesInline = false
        let usageByPartition: [String: Int] = [:]
        private let waiting = Locked<[EventLoopPromise<StateEntry?>]>([])
        private let closed = Atomic<Bool>(false)

        var isClosed: Bool { closed.load(ordering: .acquiring) }

        func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
            let promise = eventLoop.makePromise(of: StateEntry?.self)
            waiting.withLock { $0.append(promise) }
            return .later(promise.futureResult)
        }
        func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> { .success(()) }
        func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> { .success(()) }
        func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
            closed.store(true, ordering: .releasing)
            return eventLoop.makeSucceededVoidFuture()
        }

        /// Completes every read waiting.
        func release() {
            let promises = waiting.withLock { list in
                defer { list = [] }
                return list
            }
            for promise in promises { promise.succeed(nil) }
        }
    }

    /// A registry of one blocking test type, `state.gated`, whose opener fails while `failing` is set and hands
    /// out the stores it opens in `opened`.
    final class Gated: Sendable {
        let failing = Atomic<Bool>(false)
        let opened = Locked<[GatedStore]>([])

        var registry: ComponentRegistry {
            var registry = ComponentRegistry()
            registry.register(
                ComponentDescriptor(
                    type: "state.gated", metadata: [ComponentMetadataField("generation")], executesInline: false,
                    make: .state { _, _ in
                        {
                            if self.failing.load(ordering: .acquiring) { throw ComponentInitError("backend away") }
                            let store = GatedStore()
                            self.opened.withLock { $0.append(store) }
                            return store
                        }
                    }))
            HangarComponents.register(into: &registry)
            return registry
        }

        var stores: [GatedStore] { opened.withLock { $0 } }
    }

    static func host(_ components: [ComponentSpec], _ gated: Gated) throws -> ComponentHost {
        try ComponentHost(components: components, registry: gated.registry, context: .test, retireTimeout: .seconds(30))
    }

    /// Polls `condition` every 20 ms for up to `seconds`.
    static func eventually(_ seconds: Double, _ condition: () -> Bool) async throws -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }

    @Test("a blocking component is INIT until its first open, then UP and served")
    func initThenUp() async throws {
        let gated = Gated()
        let host = try Self.host([ComponentSpec(name: "g", type: "state.gated")], gated)
        #expect(host.health.map(\.status) == [.initialising])
        #expect(!host.initialised)
        await host.initialise()
        #expect(host.health.map(\.status) == [.up])
        #expect(host.health.first?.attempts == 1)
        let handle = try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        #expect(handle.store === gated.stores.first)
        try await host.close(on: Self.loop).get()
        #expect(gated.stores.first?.isClosed == true)
    }

    @Test("a failed open leaves the component DOWN with its reason, and it is retried until UP")
    func downThenRetriedUntilUp() async throws {
        let gated = Gated()
        gated.failing.store(true, ordering: .releasing)
        let host = try Self.host([ComponentSpec(name: "g", type: "state.gated")], gated)
        await host.initialise()
        let down = try #require(host.health.first)
        #expect(down.status == .down)
        #expect(down.error == "backend away")
        #expect(host.initialised)
        gated.failing.store(false, ordering: .releasing)
        try await host.running { () async throws in
            #expect(try await Self.eventually(5) { host.health.first?.status == .up })
            #expect((host.health.first?.attempts ?? 0) >= 2)
            #expect(host.health.first?.error == nil)
        }
        // Stopping the service closed it.
        #expect(gated.stores.first?.isClosed == true)
    }

    @Test("a retired instance whose calls outlive the retire timeout is closed at the timeout")
    func retiredAtTimeout() async throws {
        let gated = Gated()
        let host = try ComponentHost(
            components: [ComponentSpec(name: "g", type: "state.gated", metadata: ["generation": "1"])],
            registry: gated.registry, context: .test, retireTimeout: .milliseconds(200))
        await host.initialise()
        let old = try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        let pending = old.run(on: Self.loop) { $0.get("k", on: Self.loop) }
        try await host.running { () async throws in
            try host.apply([ComponentSpec(name: "g", type: "state.gated", metadata: ["generation": "2"])])
            #expect(try await Self.eventually(15) { gated.stores.first?.isClosed == true })
            #expect(old.pool.callsInFlight == 1)
            #expect(gated.stores.last?.isClosed == false)
        }
        #expect(gated.stores.last?.isClosed == true)
        gated.stores.first?.release()
        _ = try await pending.get()
    }

    @Test("calls are counted in flight until they complete")
    func callsInFlight() async throws {
        let gated = Gated()
        let host = try Self.host([ComponentSpec(name: "g", type: "state.gated")], gated)
        await host.initialise()
        let handle = try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        let first = handle.run(on: Self.loop) { $0.get("k", on: Self.loop) }
        let second = handle.run(on: Self.loop) { $0.get("k", on: Self.loop) }
        #expect(handle.pool.callsInFlight == 2)
        gated.stores.first?.release()
        _ = try await first.get()
        _ = try await second.get()
        #expect(try await Self.eventually(15) { handle.pool.callsInFlight == 0 })
        try await host.close(on: Self.loop).get()
    }

    @Test("after a swap the old instance serves its calls in flight and closes when the last one is done")
    func retiredWhenIdle() async throws {
        let gated = Gated()
        let host = try Self.host([ComponentSpec(name: "g", type: "state.gated", metadata: ["generation": "1"])], gated)
        await host.initialise()
        let old = try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        let pending = old.run(on: Self.loop) { $0.get("k", on: Self.loop) }

        try host.apply([ComponentSpec(name: "g", type: "state.gated", metadata: ["generation": "2"])])
        let new = try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        #expect(new.pool !== old.pool)
        #expect(new.store !== old.store)
        let oldStore = try #require(gated.stores.first)
        #expect(!oldStore.isClosed)

        oldStore.release()
        _ = try await pending.get()
        #expect(try await Self.eventually(15) { oldStore.isClosed })
        #expect(gated.stores.last?.isClosed == false)
        try await host.close(on: Self.loop).get()
    }

    @Test("an unchanged component keeps its instance; a removed idle one is closed at once")
    func unchangedKeptRemovedClosed() async throws {
        let gated = Gated()
        let specs = [
            ComponentSpec(name: "g", type: "state.gated"), ComponentSpec(name: "m", type: "state.in-memory"),
        ]
        let host = try Self.host(specs, gated)
        await host.initialise()
        let memory = try host.scoped(TenantStateHandle.self, named: "m", for: Self.orders, tenant: nil).pool
        try host.apply([ComponentSpec(name: "m", type: "state.in-memory", source: "elsewhere.yaml")])
        #expect(try host.scoped(TenantStateHandle.self, named: "m", for: Self.orders, tenant: nil).pool === memory)
        #expect(try await Self.eventually(15) { gated.stores.first?.isClosed == true })
        try await host.close(on: Self.loop).get()
    }

    @Test("a pub/sub component gets a pool of its own block, found by the pub/sub scope only")
    func pubsubIsServed() throws {
        let host = try Self.host(
            [
                ComponentSpec(name: "events", type: "pubsub.in-memory"),
                ComponentSpec(name: "m", type: "state.in-memory"),
            ], Gated())
        let handle = try host.scoped(TenantPubSubHandle.self, named: "events", for: Self.orders, tenant: nil)
        #expect(handle.pool.block == .pubsub)
        #expect(handle.prefix == "team-a||")
        let error = #expect(throws: APIError.self) {
            try host.scoped(TenantStateHandle.self, named: "events", for: Self.orders, tenant: nil)
        }
        #expect(error?.errorCode == "ERR_STATE_STORE_NOT_FOUND")
        let notPubSub = #expect(throws: APIError.self) {
            try host.scoped(TenantPubSubHandle.self, named: "m", for: Self.orders, tenant: nil)
        }
        #expect(notPubSub?.errorCode == "ERR_PUBSUB_NOT_FOUND")
    }

    @Test("the lookup refuses a caller with no component of the block: not configured")
    func notConfigured() throws {
        let host = try Self.host([ComponentSpec(name: "m", namespace: "team-b", type: "state.in-memory")], Gated())
        let error = #expect(throws: APIError.self) {
            try host.scoped(TenantStateHandle.self, named: "m", for: Self.orders, tenant: nil)
        }
        #expect(error?.errorCode == "ERR_STATE_STORE_NOT_CONFIGURED")
    }

    @Test(
        "the lookup refuses a name absent, another tenant's or out of scope: not found",
        arguments: ["absent", "theirs", "scoped"])
    func notFound(name: String) throws {
        let host = try Self.host(
            [
                ComponentSpec(name: "mine", type: "state.in-memory"),
                ComponentSpec(name: "theirs", namespace: "team-b", type: "state.in-memory"),
                ComponentSpec(name: "scoped", namespace: "team-a", type: "state.in-memory", scopes: ["billing"]),
            ], Gated())
        let error = #expect(throws: APIError.self) {
            try host.scoped(TenantStateHandle.self, named: name, for: Self.orders, tenant: nil)
        }
        #expect(error?.errorCode == "ERR_STATE_STORE_NOT_FOUND")
        #expect(error?.message == "state store \(name) is not found")
    }

    @Test("the lookup refuses a component that is INIT or DOWN: not ready", arguments: [false, true])
    func notReady(failing: Bool) async throws {
        let gated = Gated()
        gated.failing.store(failing, ordering: .releasing)
        let host = try Self.host([ComponentSpec(name: "g", type: "state.gated")], gated)
        if failing { await host.initialise() }
        let error = #expect(throws: APIError.self) {
            try host.scoped(TenantStateHandle.self, named: "g", for: Self.orders, tenant: nil)
        }
        #expect(error?.errorCode == "ERR_STATE_STORE_NOT_READY")
        #expect(error?.rpcCode == .unavailable)
        #expect(error?.errorMetadata["status"] == (failing ? "DOWN" : "INIT"))
        try await host.close(on: Self.loop).get()
    }
}
