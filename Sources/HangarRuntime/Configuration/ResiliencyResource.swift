/// A Dapr `Resiliency` resource (`dapr.io/v1alpha1`) from `--resources`: named policies (`timeouts`, `retries`,
/// `circuitBreakers`) and the targets that use them (`apps`, `actors`, `components` inbound and outbound).
///
/// ```yaml
/// apiVersion: dapr.io/v1alpha1
/// kind: Resiliency
/// metadata: {name: myresiliency, namespace: team-a}   # no namespace: every tenant
/// scopes: [checkout]                                  # app ids; none: every app of those tenants
/// spec:
///   policies:
///     timeouts: {general: 5s}
///     retries: {pubsubRetry: {policy: constant, duration: 1s, maxRetries: 2}}
///     circuitBreakers: {pubsubCB: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures > 8}}
///   targets:
///     components:
///       pubsub: {inbound: {retry: pubsubRetry, timeout: general, circuitBreaker: pubsubCB}}
/// ```
///
/// Hangar applies what governs pub/sub delivery (a component's `inbound` target and the default policies for it,
/// see `NodeConfiguration.inboundPolicy`); the rest is read and checked but not applied yet, and `notApplied` says
/// which. Like a Subscription, an invalid Resiliency does not reject the whole configuration change: it is kept
/// with its `error`, logged, listed in `/v1.0/healthz/detail`, and applies to nothing. Unlike Dapr, which ignores
/// unknown fields and a target that names a policy nobody declares, both are errors here, and a target's policies
/// must be declared in the same resource.
package struct ResiliencyResource: Sendable, Hashable, NamedResource {
    static let kind = "Resiliency"

    package var name: String
    /// nil: every tenant; otherwise only that tenant's apps.
    package var namespace: String?
    /// App ids it applies to; empty: every app of the tenants it applies in.
    package var scopes: [String] = []
    package var timeouts: [String: Duration] = [:]
    package var retries: [String: RetryPolicy] = [:]
    package var circuitBreakers: [String: CircuitBreakerPolicy] = [:]
    /// `targets.apps`, by app id.
    package var apps: [String: ResiliencyPolicyNames] = [:]
    /// `targets.actors`, by actor type.
    package var actors: [String: ResiliencyPolicyNames] = [:]
    /// `targets.components`, by component name.
    package var components: [String: ResiliencyComponentTarget] = [:]
    /// Why the resource cannot be used, with its file and field.
    package var error: ConfigurationError?
    package var source: String

    package static let apiVersion = "dapr.io/v1alpha1"

    package init(name: String, namespace: String? = nil, scopes: [String] = [], source: String = "<embedded>") {
        self.name = name
        self.namespace = namespace
        self.scopes = scopes
        self.source = source
    }

    /// Whether the (valid) resource applies to `app`.
    package func applies(to app: AppID) -> Bool {
        guard error == nil else { return false }
        if let namespace, namespace != app.namespace { return false }
        return scopes.isEmpty || scopes.contains(app.appId)
    }

    /// Reads a `kind: Resiliency` document; never throws: what is wrong becomes `error`.
    init(document: YAMLMapping) {
        source = document.path
        name = ""
        do throws(ConfigurationError) {
            let apiVersion = try document.string("apiVersion")
            guard apiVersion == Self.apiVersion else {
                throw document.error("apiVersion", "must be \(Self.apiVersion), not '\(apiVersion ?? "")'")
            }
            (name, namespace) = try Self.identity(of: document)
            scopes = try document.stringList("scopes")
            for (index, scope) in scopes.enumerated() {
                if let problem = Names.dns1123Problem(scope) { throw document.error("scopes[\(index)]", problem) }
            }
            guard let spec = try document.mapping("spec") else { return }
            try spec.rejectUnknownKeys(["policies", "targets"])
            if let policies = try spec.mapping("policies") {
                try policies.rejectUnknownKeys(["timeouts", "retries", "circuitBreakers"])
                try readPolicies(policies)
            }
            if let targets = try spec.mapping("targets") {
                try targets.rejectUnknownKeys(["apps", "actors", "components"])
                try readTargets(targets)
            }
        } catch {
            invalidate(error)
        }
    }

    private mutating func readPolicies(_ policies: YAMLMapping) throws(ConfigurationError) {
        if let node = try policies.mapping("timeouts") {
            for key in node.values.keys.sorted() {
                timeouts[key] = try Self.duration(node, key, required: true) ?? .zero
            }
        }
        if let node = try policies.mapping("retries") {
            for key in node.values.keys.sorted() {
                guard let entry = try node.mapping(key) else { throw node.error(key, "must be a mapping") }
                retries[key] = try Self.retry(entry)
            }
        }
        if let node = try policies.mapping("circuitBreakers") {
            for key in node.values.keys.sorted() {
                guard let entry = try node.mapping(key) else { throw node.error(key, "must be a mapping") }
                circuitBreakers[key] = try Self.circuitBreaker(entry)
            }
        }
    }

    private static func retry(_ entry: YAMLMapping) throws(ConfigurationError) -> RetryPolicy {
        try entry.rejectUnknownKeys(["policy", "duration", "initialInterval", "maxInterval", "maxRetries", "matching"])
        var policy = RetryPolicy()
        if let kind = try entry.string("policy"), !kind.isEmpty {
            // Dapr reads it in any case.
            guard let parsed = RetryPolicy.Kind(rawValue: kind.lowercased()) else {
                throw entry.error("policy", "must be constant or exponential, not '\(kind)'")
            }
            policy.kind = parsed
        }
        if let duration = try duration(entry, "duration") { policy.duration = duration }
        if let duration = try duration(entry, "initialInterval") { policy.initialInterval = duration }
        if let duration = try duration(entry, "maxInterval") { policy.maxInterval = duration }
        if let maxRetries = try entry.int("maxRetries") {
            guard maxRetries >= -1 else { throw entry.error("maxRetries", "must be -1 (no limit) or more") }
            policy.maxRetries = maxRetries
        }
        if let matching = try entry.mapping("matching") {
            try matching.rejectUnknownKeys(["httpStatusCodes", "gRPCStatusCodes"])
            let http = try matching.string("httpStatusCodes") ?? ""
            let grpc = try matching.string("gRPCStatusCodes") ?? ""
            do throws(RetryMatchingError) {
                policy.matching.httpStatusCodes = try RetryMatching.patterns(http, within: RetryMatching.httpRange)
            } catch {
                throw matching.error("httpStatusCodes", error.message)
            }
            do throws(RetryMatchingError) {
                policy.matching.grpcStatusCodes = try RetryMatching.patterns(grpc, within: RetryMatching.grpcRange)
            } catch {
                throw matching.error("gRPCStatusCodes", error.message)
            }
        }
        if policy.kind == .exponential, policy.initialInterval <= .zero {
            throw entry.error("initialInterval", "must be more than 0 for exponential back-off")
        }
        return policy
    }

    private static func circuitBreaker(_ entry: YAMLMapping) throws(ConfigurationError) -> CircuitBreakerPolicy {
        try entry.rejectUnknownKeys(["maxRequests", "interval", "timeout", "trip"])
        let maxRequests = try entry.int("maxRequests") ?? 0
        guard maxRequests >= 0 else { throw entry.error("maxRequests", "must not be negative") }
        let trip = try entry.string("trip").flatMap { $0.isEmpty ? nil : $0 } ?? CircuitBreakerPolicy.defaultTrip
        do {
            // gobreaker's defaults for zero values: one request half-open, 60 s open.
            let timeout = try duration(entry, "timeout") ?? .zero
            return try CircuitBreakerPolicy(
                maxRequests: maxRequests == 0 ? 1 : maxRequests, interval: try duration(entry, "interval") ?? .zero,
                timeout: timeout == .zero ? .seconds(60) : timeout, trip: trip)
        } catch let error as RouteMatchError {
            throw entry.error("trip", error.description)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw entry.error("trip", "\(error)")
        }
    }

    /// A duration field in Dapr's syntax (`ResiliencyDuration`), not negative.
    private static func duration(_ node: YAMLMapping, _ key: String, required: Bool = false) throws(ConfigurationError)
        -> Duration?
    {
        guard let text = try node.string(key), !text.isEmpty else {
            if required { throw node.error(key, "is required") }
            return nil
        }
        guard let duration = ResiliencyDuration.parse(text) else {
            throw node.error(
                key, "'\(text)' is not a duration (such as 500ms, 5s, 1m30s; a plain number is milliseconds)")
        }
        guard duration >= .zero else { throw node.error(key, "must not be negative") }
        return duration
    }

    private mutating func readTargets(_ targets: YAMLMapping) throws(ConfigurationError) {
        if let node = try targets.mapping("apps") {
            for key in node.values.keys.sorted() {
                guard let entry = try node.mapping(key) else { throw node.error(key, "must be a mapping") }
                try entry.rejectUnknownKeys(["timeout", "retry", "circuitBreaker", "circuitBreakerCacheSize"])
                try Self.cacheSize(entry)
                apps[key] = try names(entry)
            }
        }
        if let node = try targets.mapping("actors") {
            for key in node.values.keys.sorted() {
                guard let entry = try node.mapping(key) else { throw node.error(key, "must be a mapping") }
                try entry.rejectUnknownKeys([
                    "timeout", "retry", "circuitBreaker", "circuitBreakerScope", "circuitBreakerCacheSize",
                ])
                try Self.cacheSize(entry)
                let target = try names(entry)
                let scope = try entry.string("circuitBreakerScope") ?? ""
                if target.circuitBreaker != nil, scope.isEmpty {
                    throw entry.error("circuitBreakerScope", "is required with a circuitBreaker (type, id or both)")
                }
                if !scope.isEmpty, !["type", "id", "both"].contains(scope) {
                    throw entry.error("circuitBreakerScope", "must be type, id or both, not '\(scope)'")
                }
                actors[key] = target
            }
        }
        if let node = try targets.mapping("components") {
            for key in node.values.keys.sorted() {
                guard let entry = try node.mapping(key) else { throw node.error(key, "must be a mapping") }
                try entry.rejectUnknownKeys(["inbound", "outbound"])
                var target = ResiliencyComponentTarget()
                if let inbound = try entry.mapping("inbound") {
                    try inbound.rejectUnknownKeys(["timeout", "retry", "circuitBreaker"])
                    target.inbound = try names(inbound)
                }
                if let outbound = try entry.mapping("outbound") {
                    try outbound.rejectUnknownKeys(["timeout", "retry", "circuitBreaker"])
                    target.outbound = try names(outbound)
                }
                components[key] = target
            }
        }
    }

    private static func cacheSize(_ entry: YAMLMapping) throws(ConfigurationError) {
        if let size = try entry.int("circuitBreakerCacheSize"), size < 0 {
            throw entry.error("circuitBreakerCacheSize", "must not be negative")
        }
    }

    /// A target's policy names, each of which must be a policy of this resource.
    private func names(_ entry: YAMLMapping) throws(ConfigurationError) -> ResiliencyPolicyNames {
        func name(_ key: String, in declared: some Collection<String>, _ kind: String) throws(ConfigurationError)
            -> String?
        {
            guard let value = try entry.string(key), !value.isEmpty else { return nil }
            guard declared.contains(value) else {
                throw entry.error(key, "names the \(kind) policy '\(value)', which this resource does not declare")
            }
            return value
        }
        return ResiliencyPolicyNames(
            timeout: try name("timeout", in: timeouts.keys, "timeout"),
            retry: try name("retry", in: retries.keys, "retry"),
            circuitBreaker: try name("circuitBreaker", in: circuitBreakers.keys, "circuit breaker"))
    }

    mutating func invalidate(_ error: ConfigurationError) {
        self.error = error
    }

    /// What the resource declares that Hangar reads but does not apply yet, each as its field path: targets of
    /// apps, actors and components' outbound side, inbound circuit breakers, and default or built-in policies for
    /// those.
    package var notApplied: [String] {
        var list: [String] = []
        list += apps.keys.sorted().map { "targets.apps.\($0)" }
        list += actors.keys.sorted().map { "targets.actors.\($0)" }
        for (name, target) in components.sorted(by: { $0.key < $1.key }) {
            if target.inbound.circuitBreaker != nil { list.append("targets.components.\(name).inbound.circuitBreaker") }
            if target.outbound != .none { list.append("targets.components.\(name).outbound") }
        }
        let declared = Set(timeouts.keys).union(retries.keys).union(circuitBreakers.keys)
        for policy in declared.sorted() where Self.appliesOnlyElsewhere(policy) {
            list.append("policies: \(policy)")
        }
        return list
    }

    /// Whether a policy name is one Dapr applies by name somewhere Hangar does not yet: a default policy for apps,
    /// actors, outbound calls or another kind of component's inbound side, any default circuit breaker, or a
    /// built-in retry.
    static func appliesOnlyElsewhere(_ policy: String) -> Bool {
        if policy.hasPrefix("DaprBuiltIn") { return true }
        if policy.hasPrefix("Default"), policy.hasSuffix("CircuitBreakerPolicy") { return true }
        for kind in ["Retry", "Timeout"] {
            guard policy.hasPrefix("Default"), policy.hasSuffix("\(kind)Policy") else { continue }
            let level = policy.dropFirst("Default".count).dropLast("\(kind)Policy".count)
            return !NodeConfiguration.pubsubInboundDefaultLevels.contains(String(level))
        }
        return false
    }
}

/// The policies a target uses, by name (nil: none).
package struct ResiliencyPolicyNames: Sendable, Hashable {
    package var timeout: String?
    package var retry: String?
    package var circuitBreaker: String?

    package init(timeout: String? = nil, retry: String? = nil, circuitBreaker: String? = nil) {
        self.timeout = timeout
        self.retry = retry
        self.circuitBreaker = circuitBreaker
    }

    /// No policy at all.
    package static let none = ResiliencyPolicyNames()
}

/// `targets.components.<name>`: the policies of calls into the component (`outbound`) and of what it delivers
/// (`inbound`: pub/sub delivery, input bindings).
package struct ResiliencyComponentTarget: Sendable, Hashable {
    package var inbound = ResiliencyPolicyNames.none
    package var outbound = ResiliencyPolicyNames.none

    package init(inbound: ResiliencyPolicyNames = .none, outbound: ResiliencyPolicyNames = .none) {
        self.inbound = inbound
        self.outbound = outbound
    }
}
