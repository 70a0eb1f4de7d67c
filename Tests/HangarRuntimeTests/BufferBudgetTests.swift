import Foundation
import HangarComponents
import Logging
import Testing

@testable import HangarRuntime
import HangarSync

/// The node's budget of buffered request bytes and the tenants' shares of it: what refuses, what is left untouched,
/// and what the overload levels do.
@Suite("Buffered bytes: tenant shares and the node's budget")
struct BufferBudgetTests {
    static func registry(nodeLimit: Int, teamA: Int? = nil) -> TenantRegistry {
        TenantRegistry(
            configuration: NodeConfiguration(
                tenants: [
                    TenantSpec(
                        namespace: "team-a", apps: [AppSpec(appId: "orders")],
                        quotas: Quotas(maxBufferedBytes: teamA)),
                    TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders")]),
                ],
                components: []),
            maxRequestBytes: 1 << 20, buffers: BufferBudget(limit: nodeLimit))
    }

    @Test("a tenant past its maxBufferedBytes is refused, taking nothing; another tenant buffers on")
    func tenantShare() throws {
        let registry = Self.registry(nodeLimit: 10_000, teamA: 1_000)
        let a = try #require(registry.tenantAccount("team-a")?.buffers)
        let b = try #require(registry.tenantAccount("team-b")?.buffers)
        #expect(a.reserve(600) == nil)
        #expect(a.reserve(500) == .tenant(limit: 1_000))
        #expect(a.usedBytes == 600)
        #expect(registry.buffers.usedBytes == 600)
        #expect(b.reserve(5_000) == nil)
        a.release(600)
        #expect(a.reserve(1_000) == nil)
        let error = a.error(.tenant(limit: 1_000), app: AppID(namespace: "team-a", appId: "orders"))
        #expect(error.rpcCode == .resourceExhausted)
        #expect(error.httpStatus == 429)
        #expect(error.errorMetadata["quota"] == "maxBufferedBytes")
        #expect(error.message.contains("buffered request bytes"))
    }

    @Test("the default share is 64 MiB, and a reconfiguration changes it for bytes reserved later")
    func defaultShare() throws {
        let registry = Self.registry(nodeLimit: 1 << 30)
        let b = try #require(registry.tenantAccount("team-b")?.buffers)
        #expect(b.limit == 64 << 20)
        registry.apply(
            NodeConfiguration(
                tenants: [
                    TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders")], quotas: Quotas(maxBufferedBytes: 10))
                ], components: []))
        #expect(b.reserve(11) == .tenant(limit: 10))
    }

    @Test("over the budget every tenant is refused (503); at pressure only heavy tenants cannot connect")
    func nodeBudget() throws {
        let registry = Self.registry(nodeLimit: 1_000, teamA: 900)
        let a = try #require(registry.tenantAccount("team-a")?.buffers)
        let b = try #require(registry.tenantAccount("team-b")?.buffers)
        #expect(registry.buffers.level == .normal)
        #expect(a.reserve(850) == nil)
        #expect(registry.buffers.level == .normal)
        #expect(b.reserve(100) == nil)
        #expect(registry.buffers.level == .pressure)
        // Under pressure only the tenant holding the bytes (a quarter of its share or more) is kept from
        // connecting: team-b (100 of 1,000) and a TCP connection (tenant not known yet) are not locked out by it.
        #expect(!registry.buffers.admitConnection(for: a))
        #expect(registry.buffers.admitConnection(for: b))
        #expect(registry.buffers.admitConnection(for: nil))
        #expect(registry.buffers.refusedConnections == 1)
        #expect(b.reserve(100) == .node(limit: 1_000))
        #expect(b.usedBytes == 100, "a refused reservation takes nothing from the tenant either")
        #expect(registry.buffers.level == .critical)
        let error = b.error(.node(limit: 1_000), app: AppID(namespace: "team-b", appId: "orders"))
        #expect(error.httpStatus == 503)
        #expect(error.reason == "HANGAR_NODE_OVERLOADED")
        #expect(!registry.buffers.admitConnection(for: a))
        a.release(850)
        #expect(registry.buffers.level == .normal)
        #expect(registry.buffers.admitConnection(for: a))
        #expect(registry.buffers.refusedConnections == 2)
    }

    @Test("over the budget, the connection holding the most is closed, and only that one")
    func shedHeaviest() throws {
        let budget = BufferBudget(limit: 1_000)
        let closed = Locked<[String]>([])
        let light = BufferBudget.Holder { closed.withLock { $0.append("light") } }
        let heavy = BufferBudget.Holder { closed.withLock { $0.append("heavy") } }
        budget.register(light)
        budget.register(heavy)
        light.held.store(100, ordering: .relaxed)
        heavy.held.store(800, ordering: .relaxed)
        #expect(budget.reserve(900))
        #expect(!budget.reserve(200))
        #expect(closed.withLock { $0 } == ["heavy"])
        #expect(budget.shedCount == 1)
        budget.remove(heavy)
        budget.remove(light)
    }

    @Test("the default budget is half the cgroup's memory limit, or 256 MiB without one")
    func defaultLimit() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("cg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        #expect(BufferBudget.defaultLimit(cgroupRoot: root.path) == 256 << 20)
        try "536870912\n".write(to: root.appendingPathComponent("memory.max"), atomically: true, encoding: .utf8)
        #expect(BufferBudget.defaultLimit(cgroupRoot: root.path) == 256 << 20)
        try "2147483648\n".write(to: root.appendingPathComponent("memory.max"), atomically: true, encoding: .utf8)
        #expect(BufferBudget.defaultLimit(cgroupRoot: root.path) == 1 << 30)
        try "max\n".write(to: root.appendingPathComponent("memory.max"), atomically: true, encoding: .utf8)
        #expect(BufferBudget.defaultLimit(cgroupRoot: root.path) == 256 << 20)
    }

    @Test("maxBufferedBytes is a tenant quota: on an app it is refused naming the field")
    func appLevelRefused() throws {
        let yaml = """
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata:
              name: team-a
            spec:
              apps:
                - appId: orders
                  quotas:
                    maxBufferedBytes: 1000
            """
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tn-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try yaml.write(to: directory.appendingPathComponent("team-a.yaml"), atomically: true, encoding: .utf8)
        #expect {
            _ = try NodeConfiguration.load(
                tenancyDirectory: directory.path, resourcesDirectory: nil, registry: ComponentRegistry(),
                environment: [:], logger: Logger(label: "test"))
        } throws: { error in
            "\(error)".contains("maxBufferedBytes") && "\(error)".contains("spec.quotas")
        }
    }
}
