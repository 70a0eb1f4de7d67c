import Foundation
package import HangarComponents
package import Logging

/// Everything the daemon serves: tenants with their apps, and components. Loaded from `--tenancy` and
/// `--resources`, or the development default when those are not given.
public struct NodeConfiguration: Sendable, Hashable {
    package var tenants: [TenantSpec]
    package var components: [ComponentSpec]
    /// The `Configuration` resources of `--resources` (valid or not: an invalid one guards its apps by refusing).
    package var configurations: [ConfigurationResource] = []
    /// The `Subscription` resources of `--resources` (valid or not: an invalid one applies to no app).
    package var subscriptions: [SubscriptionResource] = []
    /// The `Resiliency` resources of `--resources` (valid or not: an invalid one applies to nothing), in declaration
    /// order, which decides which of two policies of the same name wins (`inboundPolicy(for:component:)`).
    package var resiliencies: [ResiliencyResource] = []
    /// The app that tokenless TCP requests act as (the development default); nil means TCP needs a token.
    package var tokenlessTCPApp: AppID?

    public init(tenants: [TenantSpec], components: [ComponentSpec], tokenlessTCPApp: AppID? = nil) {
        self.tenants = tenants
        self.components = components
        self.tokenlessTCPApp = tokenlessTCPApp
    }

    /// The development default tenant: namespace `default`, app `default`.
    package static let defaultTenant = TenantSpec(namespace: "default", apps: [AppSpec(appId: "default")])

    /// The embedded components of the development default, named like Dapr's defaults.
    package static let defaultComponents = [
        ComponentSpec(name: "statestore", type: "state.sqlite", metadata: ["connectionString": "state.db"]),
        ComponentSpec(name: "pubsub", type: "pubsub.sqlite", metadata: ["connectionString": "pubsub.db"]),
    ]

    /// Loads the configuration. A nil directory falls back to the development default for that half. Every
    /// component is checked against `registry` (type, version, metadata names), before any is created.
    package static func load(
        tenancyDirectory: String?, resourcesDirectory: String?, registry: ComponentRegistry,
        environment: [String: String] = ProcessInfo.processInfo.environment, logger: Logger
    ) throws(ConfigurationError) -> NodeConfiguration {
        var tenants: [TenantSpec] = [defaultTenant]
        var tokenless: AppID? = AppID(namespace: "default", appId: "default")
        if let tenancyDirectory {
            tenants = []
            tokenless = nil
            for file in try YAMLFiles.list(in: tenancyDirectory) {
                for document in try YAMLFiles.documents(at: file) {
                    let kind = try document.string("kind")
                    guard kind == "Tenant" else {
                        throw document.error("kind", "must be Tenant, not '\(kind ?? "")'")
                    }
                    tenants.append(try TenantSpec(document: document))
                }
            }
        }
        var components = defaultComponents
        var configurations: [ConfigurationResource] = []
        var subscriptions: [SubscriptionResource] = []
        var resiliencies: [ResiliencyResource] = []
        if let resourcesDirectory {
            components = []
            for file in try YAMLFiles.list(in: resourcesDirectory) {
                for document in try YAMLFiles.documents(at: file) {
                    let kind = try document.string("kind") ?? ""
                    if kind == "Configuration" {
                        let resource = ConfigurationResource(document: document)
                        if !resource.ignoredFields.isEmpty {
                            logger.warning(
                                "Configuration fields not supported yet; ignored (only spec.accessControl and spec.secrets are read)",
                                metadata: [
                                    "file": "\(file)", "configuration.name": "\(resource.name)",
                                    "fields": "\(resource.ignoredFields.joined(separator: ","))",
                                ])
                        }
                        configurations.append(resource)
                        continue
                    }
                    if kind == "Subscription" {
                        subscriptions.append(SubscriptionResource(document: document))
                        continue
                    }
                    if kind == "Resiliency" {
                        resiliencies.append(ResiliencyResource(document: document))
                        continue
                    }
                    guard kind == "Component" else {
                        logger.warning(
                            "resource kind not supported yet; ignored",
                            metadata: ["file": "\(file)", "kind": "\(kind)"])
                        continue
                    }
                    let component = try ComponentSpec(document: document, environment: environment)
                    let served = registry.descriptor(for: component.type).map { ComponentHost.serves($0.block) } ?? false
                    if !served, (try? document.mapping("spec")?.string("ignoreErrors")) == "true"
                    {
                        logger.warning(
                            "component type not supported; ignored (spec.ignoreErrors)",
                            metadata: ["file": "\(file)", "component.name": "\(component.name)"])
                        continue
                    }
                    _ = try ComponentHost.check(component, in: registry)
                    for name in registry.unknownMetadata(component.declaredDefinition) {
                        logger.warning(
                            "unknown component metadata ignored",
                            metadata: [
                                "file": "\(file)", "component.name": "\(component.name)", "metadata.name": "\(name)",
                                "component.type": "\(component.type)",
                            ])
                    }
                    components.append(component)
                }
            }
        }
        var configuration = NodeConfiguration(tenants: tenants, components: components, tokenlessTCPApp: tokenless)
        configuration.configurations = ConfigurationResource.markDuplicates(configurations)
        configuration.subscriptions = SubscriptionResource.markDuplicates(subscriptions)
        configuration.resiliencies = ResiliencyResource.markDuplicates(resiliencies)
        try configuration.validate()
        return configuration
    }

    /// Checks what no single file can: unique tenants, tokens and component names.
    package func validate() throws(ConfigurationError) {
        var namespaces: [String: String] = [:]
        var tokens: [String: (AppID, String)] = [:]
        for tenant in tenants {
            if let other = namespaces[tenant.namespace] {
                throw ConfigurationError(
                    path: tenant.source, field: "metadata.name",
                    message: "tenant '\(tenant.namespace)' is also declared in \(other)")
            }
            namespaces[tenant.namespace] = tenant.source
            for app in tenant.apps {
                guard let token = app.apiToken else { continue }
                let id = AppID(namespace: tenant.namespace, appId: app.appId)
                if let (other, _) = tokens[token] {
                    throw ConfigurationError(
                        path: tenant.source, field: "spec.apps[\(app.appId)].apiToken",
                        message: "the same API token is given to \(other); a token must identify exactly one app")
                }
                tokens[token] = (id, tenant.source)
            }
        }
        var components: [String: String] = [:]
        for component in self.components {
            if let other = components[component.poolKey] {
                throw ConfigurationError(
                    path: component.source, field: "metadata.name",
                    message: "component '\(component.name)'"
                        + (component.namespace.map { " in namespace '\($0)'" } ?? "")
                        + " is also declared in \(other)")
            }
            components[component.poolKey] = component.source
        }
    }

    /// Every app of every tenant.
    package var apps: [(id: AppID, spec: AppSpec, tenant: TenantSpec)] {
        tenants.flatMap { tenant in
            tenant.apps.map { (AppID(namespace: tenant.namespace, appId: $0.appId), $0, tenant) }
        }
    }
}
