import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime
import HangarSync

/// A network backend that fails after its component opened (`BackendHealthReporting`): the component is reported
/// DOWN with the reason while the backend is gone and UP again once it answers, without being reopened; and the
/// `keyLayout` metadata the shared-backend stores read is checked by the host.
@Suite("Backend health and keyLayout")
struct BackendHealthTests {
    /// An in-memory store whose "server" can be made to disappear.
    final class FlakyStore: StateStore, BackendHealthReporting {
        let inner = InMemoryStateStore()
        let problem = Locked<String?>(nil)
        var backendProblem: String? { problem.withLock { $0 } }
        var features: StateFeatures { inner.features }
        var executesInline: Bool { true }
        var usageByPartition: [String: Int] { inner.usageByPartition }
        func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> { inner.get(key, on: eventLoop) }
        func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
            inner.set(request, on: eventLoop)
        }
        func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
            inner.delete(request, on: eventLoop)
        }
        func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> { inner.close(on: eventLoop) }
    }

    static let store = FlakyStore()

    static var registry: ComponentRegistry {
        var registry = ComponentRegistry.node
        registry.register(
            ComponentDescriptor(
                type: "state.flaky", metadata: [ComponentMetadataField(StateKeyLayout.metadataName)],
                executesInline: true, make: .state { _, _ in { store } }))
        return registry
    }

    @Test("an open component whose backend is gone is DOWN with the reason, then UP again without a reopen")
    func downAndUp() throws {
        let pool = try ComponentPool<TenantStateHandle>(
            spec: ComponentSpec(name: "flaky", type: "state.flaky"),
            descriptor: Self.registry.descriptor(for: "state.flaky")!, context: .test)
        #expect(pool.open() == nil)
        #expect(pool.health.status == .up)
        let opened = pool.health.since

        Self.store.problem.withLock { $0 = "cannot connect to 10.0.0.1:6379: connection refused" }
        let down = pool.health
        #expect(down.status == .down)
        #expect(down.error == "cannot connect to 10.0.0.1:6379: connection refused")
        #expect(down.since >= opened)
        #expect(pool.health.since == down.since, "the outage's start stays put while it lasts")
        #expect(pool.component != nil, "calls still reach the component, which fails them fast")

        Self.store.problem.withLock { $0 = nil }
        let up = pool.health
        #expect(up.status == .up && up.error == nil)
        #expect(up.since >= down.since)
        #expect(up.attempts == 1, "not reopened")
    }

    @Test(
        "keyLayout dapr needs a namespaced component of a type that reads it; hangar or an unknown value as expected",
        arguments: [
            (nil as String?, "state.flaky", "dapr", "needs metadata.namespace"),
            ("team-a", "state.sqlite", "dapr", "does not support keyLayout 'dapr'"),
            ("team-a", "state.flaky", "flat", "must be 'hangar' or 'dapr'"),
            ("team-a", "state.flaky", "dapr", nil),
            (nil, "state.flaky", "hangar", nil),
            (nil, "state.sqlite", "HANGAR", nil),
        ])
    func keyLayout(namespace: String?, type: String, layout: String, refusal: String?) {
        var metadata = ["keyLayout": layout]
        if type == "state.sqlite" { metadata["connectionString"] = ":memory:" }
        let spec = ComponentSpec(name: "s", namespace: namespace, type: type, metadata: metadata, source: "s.yaml")
        do {
            _ = try ComponentHost.check(spec, in: Self.registry)
            #expect(refusal == nil)
        } catch {
            #expect(error.field == "spec.metadata.keyLayout")
            #expect(refusal.map { error.message.contains($0) } == true, "\(error.message)")
        }
    }
}
