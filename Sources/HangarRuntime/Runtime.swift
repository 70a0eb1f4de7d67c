package import HangarComponents
package import Logging
package import NIOCore
package import NIOPosix
import HangarSync

/// The runtime behind both front-ends: identity and admission (the gate), and the building blocks.
package final class Runtime: Sendable {
    package let registry: TenantRegistry
    package let gate: Gate
    package let components: ComponentHost
    package let state: StateAPI
    package let pubsub: PubSubAPI
    package let secrets: SecretsAPI
    package let metadata: MetadataAPI
    package let invocation: InvocationAPI
    /// The app channels of the apps that declare one (how invocation calls into apps).
    package let appChannels: AppChannels
    /// Push delivery of pub/sub events over the app channels: the sink the subscription sources (declarative
    /// `Subscription` resources, the apps' programmatic lists) give each app's subscriptions to.
    package let pushDelivery: PushDelivery
    /// Each app's push subscriptions (declarative and programmatic), fed to the delivery sink; its `run()` must run
    /// in the node's service group for programmatic lists to be fetched and the sink to hear of changes.
    package let subscriptionSources: SubscriptionSources
    package let metrics: RuntimeMetrics
    package let health: NodeHealth
    package let logger: Logger
    /// Serialises reconfigurations.
    private let applying = Locked<Void>(())

    package init(
        configuration: NodeConfiguration, dataDirectory: String, maxRequestBytes: Int,
        componentRegistry: ComponentRegistry, eventLoopGroup: any EventLoopGroup, threadPool: NIOThreadPool,
        metrics: RuntimeMetrics = RuntimeMetrics(), retireTimeout: Duration = .seconds(30), etagSealer: ETagSealer? = nil,
        appChannelFactory: AppChannelFactory? = nil, invocationTimeout: Duration = .seconds(60),
        subscriptionSink: (any SubscriptionSink)? = nil, buffers: BufferBudget = BufferBudget(), logger: Logger
    ) throws(ConfigurationError) {
        self.registry = TenantRegistry(configuration: configuration, maxRequestBytes: maxRequestBytes, buffers: buffers)
        self.gate = Gate(registry: registry, metrics: metrics)
        self.components = try ComponentHost(
            components: configuration.components, registry: componentRegistry,
            context: ComponentContext(
                dataDirectory: dataDirectory, threadPool: threadPool, eventLoopGroup: eventLoopGroup, logger: logger),
            retireTimeout: retireTimeout)
        let sealer: ETagSealer
        do {
            sealer = try etagSealer ?? ETagSealer.load(directory: dataDirectory)
        } catch {
            throw ConfigurationError(
                path: dataDirectory + "/etag.key", field: "", message: "cannot read or create the ETag key: \(error)")
        }
        self.state = StateAPI(components: components, registry: registry, metrics: metrics, sealer: sealer)
        self.pubsub = PubSubAPI(components: components, registry: registry, metrics: metrics)
        self.secrets = SecretsAPI(components: components, registry: registry)
        self.health = NodeHealth(components: components, registry: registry)
        self.appChannels = AppChannels(factory: appChannelFactory, logger: logger)
        self.pushDelivery = PushDelivery(
            pubsub: pubsub, channels: appChannels, eventLoopGroup: eventLoopGroup, logger: logger)
        self.subscriptionSources = SubscriptionSources(
            channels: appChannels, eventLoopGroup: eventLoopGroup, logger: logger)
        subscriptionSources.setSink(subscriptionSink ?? pushDelivery)
        subscriptionSources.update(configuration)
        appChannels.update(configuration)
        self.metadata = MetadataAPI(
            components: components, registry: registry, health: health, sources: subscriptionSources,
            streams: pubsub.subscriptions)
        self.invocation = InvocationAPI(
            registry: registry, channels: appChannels, metrics: metrics, defaultTimeout: TimeAmount(invocationTimeout))
        self.metrics = metrics
        self.logger = logger
        reportConfigurations(since: [])
        reportResiliencies(since: [])
    }

    /// Logs each Resiliency resource that became invalid (it applies to nothing), and what a new or changed valid
    /// one declares that is not applied yet, once per change.
    private func reportResiliencies(since previous: [ResiliencyResource]) {
        let before = Set(previous)
        for resource in registry.configuration.resiliencies where !before.contains(resource) {
            if let error = resource.error {
                logger.error(
                    "Resiliency resource invalid; it applies to nothing",
                    metadata: [
                        "resiliency": "\(resource.key)", "config.path": "\(resource.source)", "error": "\(error)",
                    ])
            } else if !resource.notApplied.isEmpty {
                logger.warning(
                    "Resiliency resource: only pub/sub delivery (components' inbound policies) is applied yet; ignored",
                    metadata: [
                        "resiliency": "\(resource.key)", "config.path": "\(resource.source)",
                        "notApplied": "\(resource.notApplied.joined(separator: "; "))",
                    ])
            }
        }
    }

    /// Logs each Configuration resource that became invalid, once per change (its apps are then guarded by its
    /// last good version, or refused every call).
    private func reportConfigurations(since previous: [ConfigurationStatus]) {
        for status in registry.configurationStatuses where status.error != nil && !previous.contains(status) {
            logger.error(
                status.lastGoodInForce
                    ? "Configuration resource invalid; its last good version stays in force"
                    : "Configuration resource invalid; calls into the apps that use it are refused",
                metadata: [
                    "configuration": "\(status.key)", "config.path": "\(status.source)",
                    "error": "\(status.error ?? "")",
                    "apps": "\(status.apps.map(\.description).joined(separator: ","))",
                ])
        }
    }

    /// The configuration in force.
    package var configuration: NodeConfiguration { registry.configuration }

    /// Applies a new configuration without a restart: components first (a component that cannot be created
    /// rejects the whole change, leaving the last good configuration in force), then tenants, apps and quotas.
    /// Returns what changed for the apps, so that the node can bind and close their sockets.
    package func apply(_ configuration: NodeConfiguration) throws(ConfigurationError) -> TenantRegistry.Change {
        try applying.withLock { _ throws(ConfigurationError) -> TenantRegistry.Change in
            // Also with the same components: a secret store whose source changed is replaced, and so is every
            // component whose secretKeyRefs now resolve to other values.
            try components.apply(configuration.components)
            let previous = registry.configurationStatuses
            let previousResiliencies = registry.configuration.resiliencies
            let change = registry.apply(configuration)
            appChannels.update(configuration)
            subscriptionSources.update(configuration)
            pubsub.subscriptions.refreshPolicies()
            reportConfigurations(since: previous)
            reportResiliencies(since: previousResiliencies)
            return change
        }
    }

    /// Reads the secret stores' sources again when the configuration files are unchanged (the node's watcher saw
    /// a secret file change): replaces the stores whose source changed and re-creates the components whose
    /// `secretKeyRef`s now resolve to other values. Never throws in practice: the specs were accepted before.
    package func refreshSecrets() throws(ConfigurationError) {
        try applying.withLock { _ throws(ConfigurationError) in try components.apply(components.specs) }
    }

    /// Gauges for the metrics endpoint, sampled now.
    package func gauges() -> RuntimeGauges {
        var gauges = RuntimeGauges()
        for account in registry.accounts {
            gauges.connections.append(.init(app: account.app, open: account.openConnections))
            gauges.bufferedBytes[account.tenant.namespace] = account.tenant.buffers.usedBytes
        }
        let budget = registry.buffers
        gauges.buffers = .init(
            used: budget.usedBytes, limit: budget.limit, level: budget.level.rawValue, shed: budget.shedCount,
            refusedConnections: budget.refusedConnections)
        for pool in components.all {
            for (namespace, bytes) in pool.storedBytes {
                switch pool.block {
                case .state:
                    gauges.stateBytes.append(.init(namespace: namespace, store: pool.spec.name, bytes: bytes))
                case .pubsub:
                    gauges.pubsubBytes.append(.init(namespace: namespace, component: pool.spec.name, bytes: bytes))
                case .secretstores: break
                }
            }
            for depth in pool.queueDepths {
                gauges.poolQueues.append(
                    .init(
                        component: pool.spec.name, namespace: depth.tenant, queued: depth.queued, running: depth.running
                    ))
            }
            for (namespace, waits) in pool.queueWaits {
                gauges.poolWaits.append(.init(component: pool.spec.name, namespace: namespace, waits: waits))
            }
            if let slots = pool.slots {
                gauges.poolSlots.append(.init(component: pool.spec.name, namespace: pool.spec.namespace, value: slots))
            }
            if let connections = pool.backendConnections {
                gauges.poolConnections.append(
                    .init(component: pool.spec.name, namespace: pool.spec.namespace, value: connections))
            }
        }
        return gauges
    }
}
