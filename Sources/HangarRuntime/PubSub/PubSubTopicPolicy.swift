/// What a pub/sub component's Dapr metadata says about topics and consumer groups, read once from its spec: the
/// `allowedTopics`, `protectedTopics`, `publishingScopes` and `subscriptionScopes` lists, and `consumerID`.
///
/// They apply **within a tenant**, to the topics as apps name them (never to physical topics): an app of one tenant
/// can only ever reach its own tenant's topics, and these lists narrow that further, as in Dapr
/// (`pkg/scopes`, `IsOperationAllowed`):
/// - `allowedTopics: t1,t2`: no app may use another topic;
/// - `publishingScopes: app1=t1,t2;app2=` (and `subscriptionScopes`): a listed app may use only its topics
///   (`app2=`: none); an app not listed is unrestricted...
/// - ...unless the topic is in `protectedTopics`, which only apps that list it in their scope may use.
///
/// Names are matched in any case, spaces are removed, an entry without `=` is skipped and an app listed twice
/// gets both lists, as Dapr parses them.
package struct PubSubTopicPolicy: Sendable, Hashable {
    package var allowedTopics: Set<String>
    package var protectedTopics: Set<String>
    package var publishingScopes: [String: Set<String>]
    package var subscriptionScopes: [String: Set<String>]
    /// `consumerID` as written (nil: the app id, Dapr's default); see `consumerGroup(for:)`.
    package var consumerID: String?

    package init(
        allowedTopics: Set<String> = [], protectedTopics: Set<String> = [],
        publishingScopes: [String: Set<String>] = [:], subscriptionScopes: [String: Set<String>] = [:],
        consumerID: String? = nil
    ) {
        self.allowedTopics = allowedTopics
        self.protectedTopics = protectedTopics
        self.publishingScopes = publishingScopes
        self.subscriptionScopes = subscriptionScopes
        self.consumerID = consumerID
    }

    /// Reads the policy from a component's metadata; a `consumerID` that Hangar cannot honour is refused with the
    /// component's file and field.
    init(metadata: [String: String], source: String) throws(ConfigurationError) {
        func value(_ name: String) -> String? {
            let lower = name.lowercased()
            return metadata.first { $0.key.lowercased() == lower }?.value
        }
        func topics(_ name: String) -> Set<String> {
            guard let text = value(name), !text.isEmpty else { return [] }
            let listed = text.replacingOccurrences(of: " ", with: "").split(
                separator: ",", omittingEmptySubsequences: false)
            return Set(listed.map(String.init))
        }
        func scopes(_ name: String) -> [String: Set<String>] {
            guard let text = value(name), !text.isEmpty else { return [:] }
            var scopes: [String: Set<String>] = [:]
            for entry in text.replacingOccurrences(of: " ", with: "").split(separator: ";") {
                let parts = entry.split(separator: "=", omittingEmptySubsequences: false)
                guard parts.count >= 2 else { continue }
                let listed = parts[1].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
                scopes[String(parts[0]), default: []].formUnion(listed)
            }
            return scopes
        }
        allowedTopics = topics("allowedTopics")
        protectedTopics = topics("protectedTopics")
        publishingScopes = scopes("publishingScopes")
        subscriptionScopes = scopes("subscriptionScopes")
        consumerID = value("consumerID").flatMap { $0.isEmpty ? nil : $0 }
        if let consumerID, consumerID.contains("{uuid}") || consumerID.contains("{podName}") {
            throw ConfigurationError(
                path: source, field: "spec.metadata.consumerID",
                message: "'\(consumerID)': {uuid} and {podName} are not supported (one hangard serves every replica "
                    + "of an app; replicas of one app id share its consumer group)")
        }
    }

    /// Whether `app` may publish to `topic` (the topic as the app names it).
    package func mayPublish(_ topic: String, app appId: String) -> Bool {
        allows(topic, scoped: publishingScopes[appId])
    }

    /// Whether `app` may subscribe to `topic`.
    package func maySubscribe(_ topic: String, app appId: String) -> Bool {
        allows(topic, scoped: subscriptionScopes[appId])
    }

    /// Dapr's `IsOperationAllowed`: the allow-list first, then a protected or scoped topic must be in the scope.
    private func allows(_ topic: String, scoped: Set<String>?) -> Bool {
        if !allowedTopics.isEmpty, !allowedTopics.contains(topic) { return false }
        let scoped = scoped ?? []
        if !protectedTopics.contains(topic), scoped.isEmpty { return true }
        return scoped.contains(topic)
    }

    /// The consumer group of `app`'s subscriptions, within its tenant: `consumerID` with Dapr's templates expanded
    /// (`{appID}` → the app id, `{namespace}` → `<namespace>.<appId>`), or the app id. Replicas of one app share it
    /// (competing consumers); apps with different groups each get every message (fan-out).
    package func consumerGroup(for app: AppID) -> String {
        guard let consumerID else { return app.appId }
        return
            consumerID
            .replacingOccurrences(of: "{namespace}", with: "\(app.namespace).\(app.appId)")
            .replacingOccurrences(of: "{appID}", with: app.appId)
    }
}
