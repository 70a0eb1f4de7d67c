import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Synchronization
import Testing

@testable import HangarRuntime

/// Component health: a component that cannot be initialised is DOWN, refused to its callers with a clear error,
/// retried, and harms neither the daemon nor the other components.
@Suite("Component health")
struct ComponentHealthTests {
    static let group = MultiThreadedEventLoopGroup.singleton
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    static let orders = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)
    static let other = Caller(app: AppID(namespace: "team-b", appId: "web"), transport: .unixSocket)

    /// A data directory where `blocked/` is a regular file, so a SQLite store under it cannot be created even by
    /// root; removing the file lets the next attempt succeed.
    static func dataDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-health-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("not a directory".utf8).write(to: directory.appendingPathComponent("blocked"))
        return directory
    }

    static func runtime(_ directory: URL) throws -> Runtime {
        let configuration = NodeConfiguration(
            tenants: [
                TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders")]),
                TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "web")]),
            ],
            components: [
                ComponentSpec(name: "memory", type: "state.in-memory"),
                ComponentSpec(name: "good", type: "state.sqlite", metadata: ["connectionString": "good.db"]),
                ComponentSpec(
                    name: "broken", namespace: "team-a", type: "state.sqlite",
                    metadata: ["connectionString": "blocked/broken.db"]),
            ])
        return try Runtime(
            configuration: configuration, dataDirectory: directory.path, maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: group, threadPool: NIOThreadPool.singleton,
            etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)), logger: logger)
    }

    func status(_ runtime: Runtime, _ name: String) -> ComponentHealth? {
        runtime.components.health.first { $0.name == name }
    }

    @Test("blocking stores are INIT until initialised, and the node is not ready before its listeners are up")
    func initialisingUntilOpened() async throws {
        let directory = try Self.dataDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let runtime = try Self.runtime(directory)
        #expect(status(runtime, "memory")?.status == .up)
        #expect(status(runtime, "good")?.status == .initialising)
        #expect(!runtime.components.initialised)
        let refused = await #expect(throws: APIError.self) {
            try await runtime.state.get(Self.orders, store: "good", key: "k", on: Self.group.any()).get()
        }
        #expect(refused?.rpcCode == .unavailable)
        #expect(refused?.errorCode == "ERR_STATE_STORE_NOT_READY")
        #expect(refused?.message == "state store good is initialising")

        await runtime.components.initialise()
        #expect(runtime.components.initialised)
        #expect(!runtime.health.isReady)
        runtime.health.markListenersUp()
        #expect(runtime.health.isReady)
        try await runtime.components.close(on: Self.group.any()).get()
    }

    @Test("a component that fails to initialise is DOWN, refused with its reason, and the others serve")
    func downComponentIsIsolated() async throws {
        let directory = try Self.dataDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let runtime = try Self.runtime(directory)
        await runtime.components.initialise()
        runtime.health.markListenersUp()

        let broken = try #require(status(runtime, "broken"))
        #expect(broken.status == .down)
        #expect(broken.error?.contains("cannot open state.sqlite") == true)
        #expect(status(runtime, "good")?.status == .up)
        // A DOWN component does not make the node unready: other tenants are served.
        #expect(runtime.health.isReady)
        #expect(runtime.health.status == .down)

        let loop = Self.group.any()
        let refused = await #expect(throws: APIError.self) {
            try await runtime.state.save(
                Self.orders, store: "broken", items: [StateItemRequest(key: "k", value: Data("v".utf8))], on: loop
            ).get()
        }
        #expect(refused?.rpcCode == .unavailable)
        #expect(refused?.httpStatus == 503)
        #expect(refused?.message.hasPrefix("state store broken is DOWN: cannot open state.sqlite") == true)
        #expect(refused?.reason == "HANGAR_COMPONENT_DOWN")

        try await runtime.state.save(
            Self.orders, store: "good", items: [StateItemRequest(key: "k", value: Data("v".utf8))], on: loop
        ).get()
        #expect(try await runtime.state.get(Self.orders, store: "good", key: "k", on: loop).get()?.data == Data("v".utf8))

        // Per tenant: team-a sees the broken store, team-b does not.
        let tenants = Dictionary(uniqueKeysWithValues: runtime.health.tenants.map { ($0.namespace, $0) })
        #expect(tenants["team-a"]?.status == .down)
        #expect(tenants["team-b"]?.status == .up)
        #expect(runtime.metadata.get(Self.orders).extended["hangar.health"] == "DOWN")
        #expect(runtime.metadata.get(Self.orders).extended["hangar.health.broken"]?.hasPrefix("DOWN: ") == true)
        #expect(runtime.metadata.get(Self.other).extended["hangar.health"] == "UP")
        #expect(runtime.metadata.get(Self.other).extended["hangar.health.broken"] == nil)

        // The detail document names the state of every component and tenant.
        let detail = try #require(
            try JSONSerialization.jsonObject(with: runtime.health.detailJSON()) as? [String: Any])
        #expect(detail["status"] as? String == "DOWN")
        #expect(detail["ready"] as? Bool == true)
        let components = try #require(detail["components"] as? [[String: Any]])
        #expect(components.count == 3)
        #expect(components.first { $0["name"] as? String == "broken" }?["status"] as? String == "DOWN")
        try await runtime.components.close(on: Self.group.any()).get()
    }

    @Test("a DOWN component is retried until it comes UP")
    func retriedUntilUp() async throws {
        let directory = try Self.dataDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let runtime = try Self.runtime(directory)
        await runtime.components.initialise()
        #expect(status(runtime, "broken")?.status == .down)
        // The cause goes away; the next attempt (1 s later, then 2 s) succeeds.
        try FileManager.default.removeItem(at: directory.appendingPathComponent("blocked"))
        try await runtime.components.running { () async throws in
            let deadline = ContinuousClock.now + .seconds(5)
            while status(runtime, "broken")?.status != .up, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let health = try #require(status(runtime, "broken"))
            #expect(health.status == .up)
            #expect(health.attempts >= 2)
            #expect(health.error == nil)
            try await runtime.state.save(
                Self.orders, store: "broken", items: [StateItemRequest(key: "k", value: Data("v".utf8))],
                on: Self.group.any()
            ).get()
        }
        #expect(status(runtime, "broken")?.status == .down)
        #expect(status(runtime, "broken")?.error == "closed")
    }

    @Test("a spec that is invalid on its face is still a configuration error, not a DOWN component")
    func invalidSpecIsAConfigurationError() throws {
        let configuration = NodeConfiguration(
            tenants: [TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders")])],
            components: [
                ComponentSpec(name: "bad", type: "state.sqlite", metadata: ["tableName": "no spaces allowed"])
            ])
        let error = #expect(throws: ConfigurationError.self) {
            try Runtime(
                configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 1 << 20,
                componentRegistry: .node, eventLoopGroup: Self.group, threadPool: NIOThreadPool.singleton,
                etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)), logger: Self.logger)
        }
        #expect(error?.field == "spec.metadata")
        #expect(error?.message.contains("table name") == true)
    }

    @Test("the worst state wins")
    func worstStateWins() {
        #expect([ComponentStatus.up, .initialising].max() == .initialising)
        #expect([ComponentStatus.initialising, .down, .up].max() == .down)
        #expect([ComponentStatus.up].max() == .up)
    }
}
