public import Logging
public import NIOCore
public import NIOPosix

/// The runtime behind both front-ends: identity and admission (the gate), and the building blocks.
public final class Runtime: Sendable {
    public let configuration: NodeConfiguration
    public let registry: TenantRegistry
    public let gate: Gate
    public let components: ComponentHost
    public let state: StateAPI
    public let metadata: MetadataAPI
    public let metrics: RuntimeMetrics
    public let logger: Logger

    public init(
        configuration: NodeConfiguration, dataDirectory: String, maxRequestBytes: Int,
        eventLoopGroup: any EventLoopGroup, threadPool: NIOThreadPool, metrics: RuntimeMetrics = RuntimeMetrics(),
        logger: Logger
    ) throws(ConfigurationError) {
        self.configuration = configuration
        self.registry = TenantRegistry(configuration: configuration)
        self.gate = Gate(registry: registry, maxRequestBytes: maxRequestBytes)
        self.components = try ComponentHost(
            components: configuration.components,
            stateFactory: StateStoreFactory(
                dataDirectory: dataDirectory, threadPool: threadPool, eventLoopGroup: eventLoopGroup, logger: logger),
            logger: logger)
        self.state = StateAPI(components: components)
        self.metadata = MetadataAPI(components: components, registry: registry)
        self.metrics = metrics
        self.logger = logger
    }

    /// Gauges for the metrics endpoint, sampled now.
    public func gauges() -> RuntimeGauges {
        RuntimeGauges()
    }
}
