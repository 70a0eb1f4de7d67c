package import HangarComponents
package import NIOCore

/// A component pool of any building block, as the component host, health and metrics see it: lifecycle and
/// accounting, not the component itself (a block reaches that through `ComponentHost.scoped`).
package protocol AnyComponentPool: AnyObject, Sendable {
    var spec: ComponentSpec { get }
    var secrets: ResolvedSecrets { get }
    var isStale: Bool { get }
    var block: BuildingBlock { get }
    var health: ComponentHealth { get }
    var capabilities: [String] { get }
    var storedBytes: [String: Int] { get }
    var queueDepths: [(tenant: String, queued: Int, running: Int)] { get }
    /// Operations admitted and their waits for a slot, per tenant (empty for a component that executes inline).
    var queueWaits: [String: PoolWaits] { get }
    /// Operations the pool runs at once (its fair queue's capacity); nil for a component that executes inline.
    var slots: Int? { get }
    /// Connections the open component holds to its backend server, when it has one (`BackendHealthReporting`).
    var backendConnections: Int? { get }
    var callsInFlight: Int { get }
    var opensInline: Bool { get }
    var isRetired: Bool { get }
    @discardableResult func open() -> (any Error)?
    func retire() -> Bool
    func expire()
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void>
}

extension ComponentPool: AnyComponentPool {
    package var block: BuildingBlock { Scope.block }
}
