import HangarComponents
import HangarRuntime
import Logging
import NIOCore
import NIOPosix

/// The runtime the front-end targets call into: one tenant with one app, an in-memory state store and broker named
/// as Dapr's defaults, quotas that never refuse a fuzz input (but bound what it may store), no logs.
enum FuzzRuntime {
    static let app = AppID(namespace: "fuzz", appId: "app")
    static let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })

    static let shared: Runtime = {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        let quotas = Quotas(
            requestsPerSecond: 1 << 40, burst: 1 << 40, maxConcurrentRequests: 1 << 20, maxStateBytes: 16 << 20,
            maxConnections: 1 << 20, maxStreams: 1 << 20, maxPubsubBytes: 16 << 20, maxSubscriptions: 1 << 20)
        let configuration = NodeConfiguration(
            tenants: [TenantSpec(namespace: app.namespace, apps: [AppSpec(appId: app.appId)], quotas: quotas)],
            components: [
                ComponentSpec(name: "statestore", type: "state.in-memory"),
                ComponentSpec(name: "pubsub", type: "pubsub.in-memory"),
            ])
        do {
            return try Runtime(
                configuration: configuration, dataDirectory: "/nonexistent", maxRequestBytes: 64 * 1024,
                componentRegistry: registry, eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                threadPool: NIOThreadPool.singleton, etagSealer: ETagSealer(secret: Array(repeating: 7, count: 32)),
                logger: logger)
        } catch {
            fatalError("the fuzz runtime's configuration is invalid: \(error)")
        }
    }()
}
