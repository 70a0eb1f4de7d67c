package import HangarComponents
package import NIOCore
package import NIOPosix

/// A component pool of any building block, as the component host, health and metrics see it: lifecycle and
/// accounting, not the component itself (a block reaches that through `ComponentHost.scoped`).
package protocol AnyComponentPool: AnyObject, Sendable {
    var spec: ComponentSpec { get }
    var block: BuildingBlock { get }
    var health: ComponentHealth { get }
    var capabilities: [String] { get }
    var storedBytes: [String: Int] { get }
    var queueDepths: [(tenant: String, queued: Int, running: Int)] { get }
    var callsInFlight: Int { get }
    var opensInline: Bool { get }
    @discardableResult func open() -> (any Error)?
    func initialise(threadPool: NIOThreadPool, eventLoop: any EventLoop) -> EventLoopFuture<Void>
    func attempted(_ failure: (any Error)?, threadPool: NIOThreadPool, eventLoop: any EventLoop, nextDelay: Duration)
    func retire(timeout: Duration)
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void>
}

extension ComponentPool: AnyComponentPool {
    package var block: BuildingBlock { Scope.block }
}
