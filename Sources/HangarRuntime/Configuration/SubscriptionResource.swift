import Foundation

/// A Dapr `Subscription` resource from `--resources` (reference §2a): `dapr.io/v2alpha1` (`spec.routes`) or
/// `dapr.io/v1alpha1` (`spec.route`, which becomes `routes.default`).
///
/// Like a Configuration, an invalid Subscription does not reject the whole configuration change: it is kept with its
/// `error`, logged, listed in `/v1.0/healthz/detail`, and applies to no app. Its routing rules are compiled here, so a
/// `match` Hangar cannot evaluate makes the resource invalid, with the message naming what is unsupported.
///
/// Which apps it applies to: one without `metadata.namespace` in every tenant, one with a namespace only in that
/// tenant; `scopes` narrows it to those app ids (empty: every app). Names (pub/sub, topic) are checked only for
/// being present: delivery resolves them in the app's tenant, under the component's scopes, and refuses hostile ones.
package struct SubscriptionResource: Sendable, Hashable, NamedResource {
    static let kind = "Subscription"

    package var name: String
    /// nil: node-wide (every tenant); otherwise only that tenant's apps.
    package var namespace: String?
    /// App ids it applies to; empty: every app of the tenants it applies in.
    package var scopes: [String] = []
    /// The subscription it declares; nil when invalid.
    package var spec: SubscriptionSpec?
    /// Why the resource cannot be used, with its file and field.
    package var error: ConfigurationError?
    package var source: String

    package static let apiVersions = ["dapr.io/v2alpha1", "dapr.io/v1alpha1"]

    package init(name: String, namespace: String? = nil, scopes: [String] = [], spec: SubscriptionSpec?, source: String)
    {
        self.name = name
        self.namespace = namespace
        self.scopes = scopes
        self.spec = spec
        self.source = source
    }

    /// Whether the (valid) resource applies to `app`.
    package func applies(to app: AppID) -> Bool {
        guard spec != nil else { return false }
        if let namespace, namespace != app.namespace { return false }
        return scopes.isEmpty || scopes.contains(app.appId)
    }

    /// Reads a `kind: Subscription` document; never throws: what is wrong becomes `error`.
    init(document: YAMLMapping) {
        source = document.path
        name = ""
        do throws(ConfigurationError) {
            let apiVersion = try document.string("apiVersion") ?? ""
            guard Self.apiVersions.contains(apiVersion) else {
                throw document.error(
                    "apiVersion", "must be \(Self.apiVersions.joined(separator: " or ")), not '\(apiVersion)'")
            }
            (name, namespace) = try Self.identity(of: document)
            scopes = try document.stringList("scopes")
            for (index, scope) in scopes.enumerated() {
                if let problem = Names.dns1123Problem(scope) { throw document.error("scopes[\(index)]", problem) }
            }
            guard let spec = try document.mapping("spec") else { throw document.error("spec", "is required") }
            let v2 = apiVersion == "dapr.io/v2alpha1"
            try spec.rejectUnknownKeys(
                ["pubsubname", "topic", "metadata", "deadLetterTopic", "bulkSubscribe", v2 ? "routes" : "route"])
            let pubsubName = try spec.requiredString("pubsubname")
            let topic = try spec.requiredString("topic")
            var routes: [SubscriptionRoute] = []
            if v2 {
                if let node = try spec.mapping("routes") {
                    try node.rejectUnknownKeys(["rules", "default"])
                    for (index, item) in try node.list("rules").enumerated() {
                        let rule = try YAMLMapping(
                            path: node.path, field: node.fieldPath("rules[\(index)]"), value: item)
                        try rule.rejectUnknownKeys(["match", "path"])
                        routes.append(
                            try Self.route(match: try rule.string("match"), path: try rule.string("path"), rule))
                    }
                    if let path = try node.string("default"), !path.isEmpty {
                        routes.append(SubscriptionRoute(path: path))
                    }
                }
            } else if let path = try spec.string("route"), !path.isEmpty {
                routes.append(SubscriptionRoute(path: path))
            }
            var values: [String: String] = [:]
            if let node = try spec.mapping("metadata") {
                for key in node.values.keys { values[key] = try node.string(key) ?? "" }
            }
            var bulk: BulkSubscribeSpec?
            if let node = try spec.mapping("bulkSubscribe") {
                try node.rejectUnknownKeys(["enabled", "maxMessagesCount", "maxAwaitDurationMs"])
                let enabled = try node.string("enabled")
                guard enabled == nil || enabled == "true" || enabled == "false" else {
                    throw node.error("enabled", "must be true or false")
                }
                if enabled == "true" {
                    var spec = BulkSubscribeSpec()
                    if let count = try node.int("maxMessagesCount"), count != 0 {
                        guard count > 0 else { throw node.error("maxMessagesCount", "must be positive") }
                        spec.maxMessagesCount = count
                    }
                    if let duration = try node.int("maxAwaitDurationMs"), duration != 0 {
                        guard duration > 0 else { throw node.error("maxAwaitDurationMs", "must be positive") }
                        spec.maxAwaitDurationMs = duration
                    }
                    bulk = spec
                }
            }
            let deadLetter = try spec.string("deadLetterTopic") ?? ""
            self.spec = SubscriptionSpec(
                origin: .declarative(name: name, namespace: namespace, source: source), pubsubName: pubsubName,
                topic: topic, routes: routes, deadLetterTopic: deadLetter.isEmpty ? nil : deadLetter, bulk: bulk,
                metadata: values)
        } catch {
            invalidate(error)
        }
    }

    /// A rule of `routes.rules`: its `match` compiled (empty: always), its `path` required.
    private static func route(match: String?, path: String?, _ rule: YAMLMapping) throws(ConfigurationError)
        -> SubscriptionRoute
    {
        guard let path, !path.isEmpty else { throw rule.error("path", "is required") }
        guard let match, !match.trimmingCharacters(in: .whitespaces).isEmpty else {
            return SubscriptionRoute(path: path)
        }
        do {
            return SubscriptionRoute(match: try RouteMatch(match), path: path)
        } catch {
            throw rule.error("match", error.description)
        }
    }

    mutating func invalidate(_ error: ConfigurationError) {
        self.error = error
        spec = nil
    }
}

extension NodeConfiguration {
    /// The declarative subscriptions in effect for `app`, in declaration order (files by name, then documents):
    /// valid resources that apply to it, only the first per pubsub+topic. `shadowed` lists the later ones that the
    /// first hides (logged by the runtime, as Dapr ignores them).
    package func declarativeSubscriptions(for app: AppID) -> (
        subscriptions: [SubscriptionSpec], shadowed: [(resource: SubscriptionResource, by: SubscriptionResource)]
    ) {
        var taken: [String: SubscriptionResource] = [:]
        var subscriptions: [SubscriptionSpec] = []
        var shadowed: [(SubscriptionResource, SubscriptionResource)] = []
        for resource in self.subscriptions where resource.applies(to: app) {
            guard let spec = resource.spec else { continue }
            let key = spec.pubsubName + "||" + spec.topic
            if let first = taken[key] {
                shadowed.append((resource, first))
                continue
            }
            taken[key] = resource
            subscriptions.append(spec)
        }
        return (subscriptions, shadowed)
    }
}
