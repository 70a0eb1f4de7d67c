package import Logging
package import NIOCore
package import NIOPosix

/// What the node lends every component factory: where embedded components keep their files, the thread pool for
/// blocking calls, the event loops futures complete on, and the logger.
package struct ComponentContext: Sendable {
    package let dataDirectory: String
    package let threadPool: NIOThreadPool
    package let eventLoopGroup: any EventLoopGroup
    package let logger: Logger

    package init(dataDirectory: String, threadPool: NIOThreadPool, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.dataDirectory = dataDirectory
        self.threadPool = threadPool
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }
}
