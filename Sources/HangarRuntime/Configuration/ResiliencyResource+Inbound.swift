/// The policies that govern what a component delivers to an app (its `inbound` side): for Hangar, pub/sub delivery.
/// Each part is nil when no Resiliency gives one; the delivery loop then keeps its built-in rule for that part. The
/// circuit breaker is resolved but not applied yet (`ResiliencyResource.notApplied` says so).
package struct InboundPolicy: Sendable, Hashable {
    package var retry: RetryPolicy?
    package var timeout: Duration?
    package var circuitBreaker: CircuitBreakerPolicy?
    /// Where each part comes from (`retry pubsubRetry (team-a/myresiliency)`), for logs.
    package var origin: [String] = []

    package init(
        retry: RetryPolicy? = nil, timeout: Duration? = nil, circuitBreaker: CircuitBreakerPolicy? = nil,
        origin: [String] = []
    ) {
        self.retry = retry
        self.timeout = timeout
        self.circuitBreaker = circuitBreaker
        self.origin = origin
    }

    /// No Resiliency applies.
    package static let none = InboundPolicy()
}

extension NodeConfiguration {
    /// The levels of Dapr's default policy names for a pub/sub component's inbound side, most specific first:
    /// `Default<level>RetryPolicy` (likewise `…TimeoutPolicy`, `…CircuitBreakerPolicy`).
    static let pubsubInboundDefaultLevels = ["PubsubComponentInbound", "ComponentInbound", "Component", ""]

    /// The inbound policy of pub/sub component `component` for deliveries to `app`, merged as Dapr merges the
    /// Resiliency resources a sidecar loads: the valid ones that apply to the app (namespace, scopes), in declaration
    /// order (files by name, then documents), a later policy or component target of the same name replacing an
    /// earlier one. A component named in `targets.components` uses the policies its `inbound` names (and no default
    /// for the parts it leaves out, as in Dapr); any other uses, for each of retry, timeout and circuit breaker, the
    /// first default policy declared of `DefaultPubsubComponentInbound…`, `DefaultComponentInbound…`,
    /// `DefaultComponent…`, `Default…Policy`.
    package func inboundPolicy(for app: AppID, component: String) -> InboundPolicy {
        var timeouts: [String: (Duration, String)] = [:]
        var retries: [String: (RetryPolicy, String)] = [:]
        var breakers: [String: (CircuitBreakerPolicy, String)] = [:]
        var target: ResiliencyPolicyNames?
        var any = false
        for resource in resiliencies where resource.applies(to: app) {
            any = true
            for (name, value) in resource.timeouts { timeouts[name] = (value, resource.key) }
            for (name, value) in resource.retries { retries[name] = (value, resource.key) }
            for (name, value) in resource.circuitBreakers { breakers[name] = (value, resource.key) }
            if let named = resource.components[component] { target = named.inbound }
        }
        guard any else { return .none }
        func first(_ kind: String, in declared: [String: some Any]) -> String? {
            Self.pubsubInboundDefaultLevels.lazy.map { "Default\($0)\(kind)Policy" }.first { declared[$0] != nil }
        }
        let names =
            target
            ?? ResiliencyPolicyNames(
                timeout: first("Timeout", in: timeouts), retry: first("Retry", in: retries),
                circuitBreaker: first("CircuitBreaker", in: breakers))
        var policy = InboundPolicy()
        if let name = names.retry, let (retry, key) = retries[name] {
            policy.retry = retry
            policy.origin.append("retry \(name) (\(key))")
        }
        if let name = names.timeout, let (timeout, key) = timeouts[name] {
            policy.timeout = timeout
            policy.origin.append("timeout \(name) (\(key))")
        }
        if let name = names.circuitBreaker, let (breaker, key) = breakers[name] {
            policy.circuitBreaker = breaker
            policy.origin.append("circuitBreaker \(name) (\(key))")
        }
        return policy
    }
}
