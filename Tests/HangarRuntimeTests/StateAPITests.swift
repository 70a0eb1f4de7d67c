import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime

/// The state building block over real in-memory components: partitioning, visibility and Dapr's error codes.
@Suite("State API")
struct StateAPITests {
    static let group = MultiThreadedEventLoopGroup.singleton
    let loop = StateAPITests.group.any()
    let runtime: Runtime

    static let ordersA = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)
    static let billingA = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    static let ordersB = Caller(app: AppID(namespace: "team-b", appId: "orders"), transport: .unixSocket)

    init() throws {
        let configuration = NodeConfiguration(
            tenants: [
                TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders"), AppSpec(appId: "billing")]),
                TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders")]),
            ],
            components: [
                ComponentSpec(name: "shared", type: "state.in-memory"),
                ComponentSpec(name: "by-name", type: "state.in-memory", metadata: ["keyPrefix": "name"]),
                ComponentSpec(name: "none", type: "state.in-memory", metadata: ["keyPrefix": "none"]),
                ComponentSpec(name: "cache", namespace: "team-a", type: "state.in-memory", scopes: ["orders"]),
                ComponentSpec(name: "shared", namespace: "team-b", type: "state.in-memory"),
            ])
        runtime = try Runtime(
            configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: Self.group, threadPool: NIOThreadPool.singleton,
            etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)),
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func save(_ caller: Caller, _ store: String, _ key: String, _ value: String) async throws {
        try await runtime.state.save(
            caller, store: store, items: [StateItemRequest(key: key, value: Data(value.utf8))], on: loop
        ).get()
    }

    func read(_ caller: Caller, _ store: String, _ key: String) async throws -> String? {
        try await runtime.state.get(caller, store: store, key: key, on: loop).get().map {
            String(decoding: $0.data, as: UTF8.self)
        }
    }

    @Test("the same appId and key in two tenants are two values")
    func tenantsAreSeparate() async throws {
        try await save(Self.ordersA, "by-name", "k", "a")
        try await save(Self.ordersB, "by-name", "k", "b")
        #expect(try await read(Self.ordersA, "by-name", "k") == "a")
        #expect(try await read(Self.ordersB, "by-name", "k") == "b")
    }

    @Test("keyPrefix appid separates apps, name and none share within the namespace only")
    func keyPrefixStaysInsideTheNamespace() async throws {
        try await save(Self.ordersA, "none", "k", "orders")
        #expect(try await read(Self.billingA, "none", "k") == "orders")
        #expect(try await read(Self.ordersB, "none", "k") == nil)
        try await save(Self.ordersA, "by-name", "n", "x")
        #expect(try await read(Self.billingA, "by-name", "n") == "x")
        let handle = try runtime.components.scoped(
            TenantStateHandle.self, named: "by-name", for: Self.ordersA, tenant: nil)
        #expect(handle.prefix == "team-a||by-name||")
    }

    @Test("a namespaced component hides the shared one of the same name for its tenant")
    func namespacedHidesShared() async throws {
        try await save(Self.ordersB, "shared", "k", "b")
        try await save(Self.ordersA, "shared", "k", "a")
        let poolA = try runtime.components.scoped(
            TenantStateHandle.self, named: "shared", for: Self.ordersA, tenant: nil
        )
        .pool
        let poolB = try runtime.components.scoped(
            TenantStateHandle.self, named: "shared", for: Self.ordersB, tenant: nil
        )
        .pool
        #expect(poolA.spec.namespace == nil)
        #expect(poolB.spec.namespace == "team-b")
        #expect(try await read(Self.ordersB, "shared", "k") == "b")
    }

    @Test("a component of another namespace or out of scope is not found and not listed")
    func visibility() async throws {
        let error = await #expect(throws: APIError.self) {
            try await self.read(Self.ordersB, "cache", "k")
        }
        #expect(error?.errorCode == "ERR_STATE_STORE_NOT_FOUND")
        #expect(error?.rpcCode == .invalidArgument)
        #expect(error?.message == "state store cache is not found")
        await #expect(throws: APIError.self) { try await self.read(Self.billingA, "cache", "k") }
        #expect(try await read(Self.ordersA, "cache", "k") == nil)
        #expect(runtime.metadata.get(Self.ordersB).components.map(\.name) == ["by-name", "none", "shared"])
        #expect(runtime.metadata.get(Self.ordersA).components.map(\.name) == ["by-name", "cache", "none", "shared"])
        #expect(runtime.metadata.get(Self.billingA).components.map(\.name) == ["by-name", "none", "shared"])
    }

    @Test("hostile keys are refused before they reach a store", arguments: ["a||b", "||", "x||", ""])
    func hostileKeys(key: String) async throws {
        let error = await #expect(throws: APIError.self) { try await self.save(Self.ordersA, "none", key, "v") }
        #expect(error?.rpcCode == .invalidArgument)
        #expect(error?.httpStatus == 400)
    }

    @Test("bulk get reads keys in order, and an invalid key fails the whole call as in Dapr")
    func bulkGet() async throws {
        try await save(Self.ordersA, "shared", "ok", "v")
        let values = try await runtime.state.bulkGet(Self.ordersA, store: "shared", keys: ["ok", "missing"], on: loop)
            .get()
        #expect(values.map(\.key) == ["ok", "missing"])
        #expect(values[0].value?.data == Data("v".utf8))
        #expect(values[1].value == nil && values[1].error == nil)
        let error = await #expect(throws: APIError.self) {
            try await self.runtime.state.bulkGet(Self.ordersA, store: "shared", keys: ["ok", "a||b"], on: self.loop)
                .get()
        }
        #expect(error?.rpcCode == .invalidArgument)
    }

    @Test("stale and malformed ETags map to ABORTED/409 and INVALID_ARGUMENT/400")
    func etagErrors() async throws {
        try await save(Self.ordersA, "shared", "e", "1")
        let stale = await #expect(throws: APIError.self) {
            try await self.runtime.state.save(
                Self.ordersA, store: "shared", items: [StateItemRequest(key: "e", etag: "999999")], on: self.loop
            ).get()
        }
        #expect(stale?.rpcCode == .aborted && stale?.httpStatus == 409 && stale?.errorCode == "ERR_STATE_SAVE")
        let malformed = await #expect(throws: APIError.self) {
            try await self.runtime.state.delete(
                Self.ordersA, store: "shared", items: [StateItemRequest(key: "e", etag: "abc")], on: self.loop
            ).get()
        }
        #expect(malformed?.rpcCode == .invalidArgument && malformed?.errorCode == "ERR_STATE_DELETE")
    }

    @Test("a transaction with an unknown operation type or a failing operation writes nothing")
    func transactions() async throws {
        let bad = await #expect(throws: APIError.self) {
            try await self.runtime.state.transact(
                Self.ordersA, store: "shared",
                operations: [
                    .init(operation: "upsert", item: .init(key: "t1", value: Data("x".utf8))),
                    .init(operation: "merge", item: .init(key: "t2")),
                ],
                on: self.loop
            ).get()
        }
        #expect(bad?.errorCode == "ERR_NOT_SUPPORTED_STATE_OPERATION")
        let failing = await #expect(throws: APIError.self) {
            try await self.runtime.state.transact(
                Self.ordersA, store: "shared",
                operations: [
                    .init(operation: "upsert", item: .init(key: "t1", value: Data("x".utf8))),
                    .init(operation: "delete", item: .init(key: "t2", etag: "12345")),
                ],
                on: self.loop
            ).get()
        }
        #expect(failing?.errorCode == "ERR_STATE_TRANSACTION")
        #expect(try await read(Self.ordersA, "shared", "t1") == nil)
    }

    @Test("ttlInSeconds must be a positive integer or -1")
    func ttlValidation() async throws {
        for bad in ["0", "-2", "soon", "1.5"] {
            await #expect(throws: APIError.self) {
                try await self.runtime.state.save(
                    Self.ordersA, store: "shared", items: [StateItemRequest(key: "t", metadata: ["ttlInSeconds": bad])],
                    on: self.loop
                ).get()
            }
        }
        try await runtime.state.save(
            Self.ordersA, store: "shared", items: [StateItemRequest(key: "t", metadata: ["ttlInSeconds": "-1"])],
            on: loop
        ).get()
        let value = try await runtime.state.get(Self.ordersA, store: "shared", key: "t", on: loop).get()
        #expect(value?.metadata["ttlExpireTime"] == nil)
        try await runtime.state.save(
            Self.ordersA, store: "shared", items: [StateItemRequest(key: "t", metadata: ["ttlInSeconds": "60"])],
            on: loop
        ).get()
        #expect(
            try await runtime.state.get(Self.ordersA, store: "shared", key: "t", on: loop).get()?.metadata[
                "ttlExpireTime"] != nil)
    }

    @Test("features a store does not advertise are refused with a clear error")
    func unadvertisedFeatures() async throws {
        let descriptor = ComponentDescriptor(
            type: "test.plain", executesInline: true, make: .state { _, _ in { PlainStore() } })
        let pool = try ComponentPool<TenantStateHandle>(
            spec: ComponentSpec(name: "plain", type: "test.plain"), descriptor: descriptor, context: .test)
        pool.open()
        let handle = try #require(pool.scope(for: Self.ordersA.app, tenant: nil))
        let ttl = #expect(throws: APIError.self) { try StateAPI.ttl(["ttlInSeconds": "5"], handle: handle) }
        #expect(ttl?.errorCode == "ERR_STATE_STORE_NOT_SUPPORTED")
        #expect(ttl?.message == "state store plain doesn't support TTL")
        #expect(throws: APIError.self) { try StateAPI.checkETagSupport("1", handle) }
    }

    @Test("Shutdown detaches the calling app only; the gate then refuses it")
    func shutdownDetachesOneApp() throws {
        runtime.metadata.shutdown(Self.billingA)
        #expect(throws: APIError.self) { try runtime.gate.admit(.app(Self.billingA.app), token: nil, connection: nil) }
        #expect(try runtime.gate.admit(.app(Self.ordersA.app), token: nil, connection: nil).caller == Self.ordersA)
    }
}

/// A store with no optional features, to check that the runtime refuses what a store does not advertise.
final class PlainStore: StateStore {
    let features: StateFeatures = []
    let executesInline = true
    let usageByPartition: [String: Int] = [:]
    func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> { .success(nil) }
    func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> { .success(()) }
    func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> { .success(()) }
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> { eventLoop.makeSucceededVoidFuture() }
}
