import HangarSync

/// What `GetMetadata` reports to one caller.
package struct RuntimeMetadata: Sendable, Hashable {
    package struct Component: Sendable, Hashable {
        package var name: String
        package var type: String
        package var version: String
        package var capabilities: [String]
    }

    /// One of the caller's subscriptions (Dapr's `PubsubSubscription`).
    package struct Subscription: Sendable, Hashable {
        package enum Kind: String, Sendable, Hashable {
            case declarative = "DECLARATIVE", programmatic = "PROGRAMMATIC", streaming = "STREAMING"
        }

        package struct Rule: Sendable, Hashable {
            /// The `match` expression as written; empty for a rule that always matches.
            package var match: String
            package var path: String
        }

        package var pubsubName: String
        package var topic: String
        package var metadata: [String: String]
        package var rules: [Rule]
        /// Empty: none.
        package var deadLetterTopic: String
        package var kind: Kind
    }

    package var id: String
    package var runtimeVersion: String
    package var components: [Component]
    /// The caller's own subscriptions: push ones in effect, then its open streams.
    package var subscriptions: [Subscription] = []
    package var extended: [String: String]
    package var enabledFeatures: [String]
}

/// The metadata building block: `GetMetadata`, `SetMetadata`, and `Shutdown`, which detaches only the calling app.
package final class MetadataAPI: Sendable {
    package static let runtimeVersion = "hangar-0.1.0"
    /// How many `SetMetadata` attributes one app may hold.
    static let maxAttributes = 1024

    private let components: ComponentHost
    private let registry: TenantRegistry
    private let health: NodeHealth
    /// Attributes set with `SetMetadata`, per app.
    private let attributes = Locked<[AppID: [String: String]]>([:])
    /// Called when an app detaches, to close its sockets; set once by the daemon at start-up.
    private let onDetach = Locked<(@Sendable (AppID) -> Void)?>(nil)

    private let sources: SubscriptionSources
    private let streams: DeliveryLoops

    init(
        components: ComponentHost, registry: TenantRegistry, health: NodeHealth, sources: SubscriptionSources,
        streams: DeliveryLoops
    ) {
        self.components = components
        self.registry = registry
        self.health = health
        self.sources = sources
        self.streams = streams
    }

    package func setDetachHandler(_ handler: @escaping @Sendable (AppID) -> Void) {
        onDetach.withLock { $0 = handler }
    }

    package func get(_ caller: Caller) -> RuntimeMetadata {
        var extended = attributes.withLock { $0[caller.app] } ?? [:]
        extended["daprRuntimeVersion"] = Self.runtimeVersion
        extended["hangar.namespace"] = caller.namespace
        extended["hangar.appId"] = caller.appId
        // Health of what this app may use: the worst state, then each component's (with the error when DOWN).
        let (status, healths) = health.health(of: caller.app)
        extended["hangar.health"] = status.rawValue
        for component in healths {
            extended["hangar.health.\(component.name)"] =
                component.error.map { "\(component.status.rawValue): \($0)" } ?? component.status.rawValue
        }
        return RuntimeMetadata(
            id: caller.appId,
            runtimeVersion: Self.runtimeVersion,
            components: components.visibleComponents(to: caller.app).map {
                .init(name: $0.name, type: $0.type, version: $0.version, capabilities: components.features(of: $0))
            },
            subscriptions: subscriptions(of: caller.app),
            extended: extended,
            enabledFeatures: [])
    }

    /// `app`'s subscriptions as Dapr lists them: the push ones in effect (declarative or programmatic), then one
    /// entry per open stream (its rule is the path `/` Dapr gives streams). Never another app's.
    private func subscriptions(of app: AppID) -> [RuntimeMetadata.Subscription] {
        let push = sources.subscriptions(for: app).map { spec in
            let kind: RuntimeMetadata.Subscription.Kind =
                switch spec.origin {
                case .declarative: .declarative
                case .programmatic: .programmatic
                }
            return RuntimeMetadata.Subscription(
                pubsubName: spec.pubsubName, topic: spec.topic, metadata: spec.metadata,
                rules: spec.routes.map { .init(match: $0.match?.expression ?? "", path: $0.path) },
                deadLetterTopic: spec.deadLetterTopic ?? "", kind: kind)
        }
        let streaming = streams.listings(of: app).map { listing in
            RuntimeMetadata.Subscription(
                pubsubName: listing.pubsubName, topic: listing.topic, metadata: listing.metadata,
                rules: [.init(match: "", path: "/")], deadLetterTopic: listing.deadLetterTopic ?? "", kind: .streaming)
        }
        return push + streaming
    }

    /// `SetMetadata`: an attribute visible to this app only. Keys the runtime reports itself cannot be overwritten.
    package func set(_ caller: Caller, key: String, value: String) throws(APIError) {
        guard !key.isEmpty else { throw RequestError.malformed("metadata key is empty") }
        guard key != "daprRuntimeVersion", !key.hasPrefix("hangar.") else {
            throw RequestError.malformed("metadata key \(Names.quoted(key)) is reserved by the runtime")
        }
        guard key.utf8.count <= 256, value.utf8.count <= 64 * 1024 else {
            throw RequestError.malformed("metadata key or value is too long (256 bytes / 64 KiB at most)")
        }
        let stored = attributes.withLock { all -> Bool in
            guard all[caller.app, default: [:]].count < Self.maxAttributes || all[caller.app]?[key] != nil else {
                return false
            }
            all[caller.app, default: [:]][key] = value
            return true
        }
        if !stored { throw RequestError.malformed("an app may set at most \(Self.maxAttributes) metadata attributes") }
    }

    /// `Shutdown`: detaches the calling app (its sockets close once this call is answered); never stops the daemon.
    package func shutdown(_ caller: Caller) {
        guard registry.detach(caller.app) else { return }
        let handler = onDetach.withLock { $0 }
        handler?(caller.app)
    }
}
