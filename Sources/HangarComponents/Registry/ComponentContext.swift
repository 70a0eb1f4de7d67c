public import Logging
public import NIOCore
public import NIOPosix

/// What the node lends every component factory: where embedded components keep their files, the thread pool for
/// blocking calls, the event loops futures complete on, and the logger.
public struct ComponentContext: Sendable {
    public let dataDirectory: String
    public let threadPool: NIOThreadPool
    public let eventLoopGroup: any EventLoopGroup
    public let logger: Logger

    public init(dataDirectory: String, threadPool: NIOThreadPool, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.dataDirectory = dataDirectory
        self.threadPool = threadPool
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }
}
