import HangarComponents
import HangarSQLite
import Logging
import NIOPosix

@testable import HangarRuntime

extension ComponentRegistry {
    /// The registry hangard builds: every backend of this package.
    static var node: ComponentRegistry {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        HangarSQLite.register(into: &registry)
        return registry
    }
}

extension ComponentContext {
    /// A context for pools made directly in tests: shared event loops and thread pool, no data directory, no logs.
    static var test: ComponentContext {
        ComponentContext(
            dataDirectory: "/nonexistent", threadPool: NIOThreadPool.singleton,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }
}
