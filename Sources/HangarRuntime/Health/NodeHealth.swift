package import Foundation
import Synchronization

/// The node's health: whether its listeners are up, and every component's state. Readiness (`/v1.0/healthz`,
/// `READY=1` to systemd) needs every listener up and every component past its first initialisation attempt; a
/// component that is DOWN does not make the node unready (the other tenants are served), but it is the worst state
/// in `/healthz/detail` and in its tenants' metadata.
package final class NodeHealth: Sendable {
    private let components: ComponentHost
    private let registry: TenantRegistry
    private let listenersUp = Atomic<Bool>(false)

    init(components: ComponentHost, registry: TenantRegistry) {
        self.components = components
        self.registry = registry
    }

    /// Called by the node once every listener it was configured with accepts connections.
    package func markListenersUp() { listenersUp.store(true, ordering: .releasing) }

    /// Every listener is up and every component has made its first initialisation attempt.
    package var isReady: Bool { listenersUp.load(ordering: .acquiring) && components.initialised }

    /// One tenant's view: the components its apps may use, and the worst of their states.
    package struct TenantHealth: Sendable, Hashable {
        package var namespace: String
        package var status: ComponentStatus
        package var apps: Int
        package var components: [ComponentHealth]
    }

    /// The health of the components an app may use, and the worst of them (`UP` when it may use none).
    package func health(of app: AppID) -> (status: ComponentStatus, components: [ComponentHealth]) {
        let components = components.health(visibleTo: app)
        return (components.map(\.status).max() ?? .up, components)
    }

    /// Every tenant, with the components any of its apps may use.
    package var tenants: [TenantHealth] {
        let configuration = registry.configuration
        return configuration.tenants.map { tenant in
            var seen: [String: ComponentHealth] = [:]
            for app in tenant.apps {
                for component in components.health(visibleTo: AppID(namespace: tenant.namespace, appId: app.appId)) {
                    seen["\(component.namespace ?? "*")/\(component.name)"] = component
                }
            }
            let list = seen.values.sorted { ($0.namespace ?? "", $0.name) < ($1.namespace ?? "", $1.name) }
            return TenantHealth(
                namespace: tenant.namespace, status: list.map(\.status).max() ?? .up, apps: tenant.apps.count,
                components: list)
        }.sorted { $0.namespace < $1.namespace }
    }

    /// The node's overall state: the worst of its listeners (`INIT` until up) and its components.
    package var status: ComponentStatus {
        let listeners: ComponentStatus = listenersUp.load(ordering: .acquiring) ? .up : .initialising
        return max(listeners, components.health.map(\.status).max() ?? .up)
    }

    /// Component counts by state, for systemd's `STATUS=` line and logs.
    package var counts: [ComponentStatus: Int] {
        var counts: [ComponentStatus: Int] = [:]
        for component in components.health { counts[component.status, default: 0] += 1 }
        return counts
    }

    /// `/healthz/detail`: the whole node as JSON, `{status, ready, listeners, components[], configurations[],
    /// subscriptions[], resiliencies[], overload, tenants[]}`; `configurations`, `subscriptions` and `resiliencies` list every
    /// Configuration, Subscription and Resiliency resource, an invalid one with its error, a valid Resiliency with
    /// what it declares that is not applied yet (`notApplied`). Sorted keys, so that it diffs well.
    /// The node's buffered bytes against its budget and the overload level with what it does: `normal`;
    /// `pressure` (new connections refused); `critical` (calls that would buffer more refused, the heaviest
    /// connection closed).
    func overload() -> [String: Any] {
        let budget = registry.buffers
        let level = budget.level
        var tenants: [String: Int] = [:]
        for account in registry.accounts { tenants[account.tenant.namespace] = account.tenant.buffers.usedBytes }
        let actions: [String] =
            switch level {
            case .normal: []
            case .pressure: ["refusing new connections of the tenants holding the bytes"]
            case .critical:
                [
                    "refusing new connections of the tenants holding the bytes", "refusing calls that would buffer more",
                    "shedding the heaviest connection",
                ]
            }
        return [
            "level": level.description, "actions": actions, "bufferedBytes": budget.usedBytes,
            "budgetBytes": budget.limit, "shedConnections": budget.shedCount,
            "refusedConnections": budget.refusedConnections, "tenantBufferedBytes": tenants,
        ]
    }

    package func detailJSON() -> Data {
        func component(_ health: ComponentHealth, brief: Bool) -> [String: Any] {
            var object: [String: Any] = ["name": health.name, "status": health.status.rawValue]
            if let namespace = health.namespace { object["namespace"] = namespace }
            if let error = health.error { object["error"] = error }
            if !brief {
                object["type"] = health.type
                object["attempts"] = health.attempts
                object["since"] = health.since.formatted(.iso8601)
            }
            return object
        }
        func configuration(_ status: ConfigurationStatus) -> [String: Any] {
            var object: [String: Any] = [
                "name": status.name, "source": status.source, "status": status.error == nil ? "VALID" : "INVALID",
                "apps": status.apps.map(\.description),
            ]
            if let namespace = status.namespace { object["namespace"] = namespace }
            if let error = status.error {
                object["error"] = error
                object["inForce"] =
                    status.lastGoodInForce ? "last good version" : "none: calls into its apps are refused"
            }
            return object
        }
        func subscription(_ resource: SubscriptionResource) -> [String: Any] {
            var object: [String: Any] = [
                "name": resource.name, "source": resource.source, "status": resource.error == nil ? "VALID" : "INVALID",
                "scopes": resource.scopes,
            ]
            if let namespace = resource.namespace { object["namespace"] = namespace }
            if let spec = resource.spec {
                object["pubsubname"] = spec.pubsubName
                object["topic"] = spec.topic
            }
            if let error = resource.error { object["error"] = error.description }
            return object
        }
        func resiliency(_ resource: ResiliencyResource) -> [String: Any] {
            var object: [String: Any] = [
                "name": resource.name, "source": resource.source, "status": resource.error == nil ? "VALID" : "INVALID",
                "scopes": resource.scopes,
            ]
            if let namespace = resource.namespace { object["namespace"] = namespace }
            if let error = resource.error {
                object["error"] = error.description
            } else {
                // Read and checked, but not applied by Hangar yet: never silently.
                object["notApplied"] = resource.notApplied
            }
            return object
        }
        let up = listenersUp.load(ordering: .acquiring)
        let object: [String: Any] = [
            "status": status.rawValue,
            "ready": isReady,
            "listeners": ["status": (up ? ComponentStatus.up : .initialising).rawValue],
            "components": components.health.map { component($0, brief: false) },
            "configurations": registry.configurationStatuses.map(configuration),
            "subscriptions": registry.configuration.subscriptions.map(subscription),
            "resiliencies": registry.configuration.resiliencies.map(resiliency),
            "overload": overload(),
            "tenants": tenants.map { tenant in
                [
                    "namespace": tenant.namespace, "status": tenant.status.rawValue, "apps": tenant.apps,
                    "components": tenant.components.map { component($0, brief: true) },
                ] as [String: Any]
            },
        ]
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])) ?? Data()
    }
}
