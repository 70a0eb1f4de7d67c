/// A Configuration's `accessControl` compiled for one kind of app, decided as Dapr's `pkg/acl` decides it. Built
/// once per configuration change; immutable and shared by every app that uses the Configuration.
///
/// Identity: Dapr takes the caller's SPIFFE ID (`spiffe://<trustDomain>/ns/<namespace>/<appId>`) from its mTLS
/// certificate. Hangar knows the caller from its socket or token (`Caller.app`), and its trust domain from its
/// Tenant (`spec.trustDomain`, `public` by default), so every caller has an identity and the policies always apply.
final class AccessControlList: Sendable {
    private struct Policy: Sendable {
        let trustDomain: String
        let namespace: String
        let defaultAction: String?
        let operations: OperationTrie
    }

    /// Dapr's global default trust domain.
    static let defaultTrustDomain = "public"

    /// The global default action (lower-cased).
    let defaultAction: String
    let trustDomain: String
    /// Whether operations are matched without case (the app is an HTTP app).
    let isHTTP: Bool
    /// By `appId||namespace`, as Dapr keys them.
    private let policies: [String: Policy]

    /// nil when `spec` declares nothing (no trust domain, no default action, no policy): every call is allowed.
    init?(_ spec: AccessControlSpec, isHTTP: Bool) {
        let policies = spec.policies ?? []
        if spec.trustDomain == nil && spec.defaultAction == nil && policies.isEmpty { return nil }
        self.isHTTP = isHTTP
        trustDomain = spec.trustDomain ?? Self.defaultTrustDomain
        // Without a default: deny when policies are given, and also when the list is absent altogether (Dapr reads
        // a missing list as nil, and nil as "some"); allow for an explicitly empty list.
        defaultAction = spec.defaultAction?.lowercased() ?? (spec.policies?.isEmpty == true ? "allow" : "deny")
        var compiled: [String: Policy] = [:]
        for policy in policies {
            var trie = OperationTrie()
            for operation in policy.operations {
                var name = operation.name.hasPrefix("/") ? operation.name : "/" + operation.name
                if isHTTP { name = name.lowercased() }
                var byVerb: [String: String] = [:]
                for verb in operation.httpVerbs { byVerb[verb] = operation.action }
                trie.insert(name, OperationTrie.Action(byVerb: byVerb, action: operation.action))
            }
            compiled["\(policy.appId)||\(policy.namespace)"] = Policy(
                trustDomain: policy.trustDomain, namespace: policy.namespace, defaultAction: policy.defaultAction,
                operations: trie)
        }
        self.policies = compiled
    }

    /// Whether `caller`, of trust domain `callerTrustDomain`, may call `operation` with `verb` (the HTTP verb name
    /// for an HTTP app, `NONE` when the call has none or the app is a gRPC app).
    func allows(_ caller: AppID, trustDomain callerTrustDomain: String, operation: String, verb: String) -> Bool {
        var action = defaultAction
        guard let policy = policies["\(caller.appId)||\(caller.namespace)"], policy.trustDomain == callerTrustDomain,
            policy.namespace == caller.namespace
        else { return Self.isAllow(action) }
        if let own = policy.defaultAction { action = own }
        var operation = operation.hasPrefix("/") ? operation : "/" + operation
        if isHTTP { operation = operation.lowercased() }
        if let matched = policy.operations.search(operation) {
            if isHTTP {
                if verb != "NONE" {
                    if let byVerb = matched.byVerb[verb] ?? matched.byVerb["*"] { action = byVerb }
                } else {
                    action = policy.defaultAction ?? ""
                }
            } else {
                action = matched.action
            }
        }
        return Self.isAllow(action)
    }

    /// Anything but `allow` (in any case) denies.
    static func isAllow(_ action: String) -> Bool { action.lowercased() == "allow" }

    /// The caller as Dapr names it in a denial: its SPIFFE ID.
    static func spiffeID(_ caller: AppID, trustDomain: String) -> String {
        "spiffe://\(trustDomain)/ns/\(caller.namespace)/\(caller.appId)"
    }
}
