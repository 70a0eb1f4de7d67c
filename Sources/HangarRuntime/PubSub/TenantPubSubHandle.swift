package import HangarComponents
package import NIOCore

/// A caller's view of a pub/sub component: topics and consumer groups go in as the app names them and reach the
/// component under its tenant's prefix, `<namespace>||<topic>` and `<namespace>||<group>`. The pub/sub block's
/// `TenantScope`, and the single place where topics are partitioned: the same topic name in two tenants is two
/// physical topics on a shared component, whatever the component's metadata says.
///
/// Dapr partitions topics only when some metadata value contains `{namespace}` (then `<namespace><topic>`, no
/// separator; reference §3.9, trap §7.11), so that tenants of one Dapr component share topics by default. Hangar
/// always partitions, with a separator (names are validated, so `<namespace>||` cannot be forged): `{namespace}`
/// in metadata changes nothing for topics, and apps see their topics un-prefixed either way, as with Dapr's
/// namespaced mode. Only `consumerID`'s templates are expanded (`PubSubTopicPolicy.consumerGroup`).
///
/// Delivery (next step) uses `consumer(_:)`, `ensureConsumer`, `fetch`, `ack`, `nack` and `waitForPublish` here,
/// which take the topic as the app names it.
package struct TenantPubSubHandle: TenantScope {
    package let pool: ComponentPool<TenantPubSubHandle>
    /// The pool's component, open when the handle was made.
    package let pubsub: any PubSub
    package let app: AppID
    /// The caller's tenant account (its weight and `maxPubsubBytes`); nil only in tests without a registry.
    package let tenant: TenantAccount?
    /// `<namespace>||`: every physical topic and group of the tenant starts with it.
    package let prefix: String

    package init(pool: ComponentPool<TenantPubSubHandle>, component: any PubSub, app: AppID, tenant: TenantAccount?) {
        self.pool = pool
        self.pubsub = component
        self.app = app
        self.tenant = tenant
        self.prefix = app.namespace + Names.keySeparator
    }

    /// The component's name, as apps name it.
    package var name: String { pool.spec.name }
    package var policy: PubSubTopicPolicy { pool.partitioning }

    /// The longest topic name accepted, in UTF-8 bytes.
    package static let maxTopicBytes = 255

    /// The physical topic for an app's topic, refusing names that could break partitioning or that no operator
    /// wants in a log or a file name: `||` (the separator), control characters, `.` or `..` as a `/`-separated
    /// segment, more than `maxTopicBytes` bytes. An empty topic is the API's `ERR_TOPIC_NAME_EMPTY`, checked first.
    package func physicalTopic(_ topic: String) throws(APIError) -> String {
        if let problem = Self.topicProblem(topic) { throw PubSubAPIError.invalidTopic(topic, problem) }
        return prefix + topic
    }

    /// Why `topic` is refused, or nil when it is a valid topic name.
    package static func topicProblem(_ topic: String) -> String? {
        if topic.utf8.count > maxTopicBytes {
            return "it is \(topic.utf8.count) bytes long; at most \(maxTopicBytes) are allowed"
        }
        if Names.containsKeySeparator(topic) { return "it contains '||'" }
        if topic.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            return "it contains control characters"
        }
        if topic.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == "." || $0 == ".." }) {
            return "'.' and '..' are not allowed as path segments"
        }
        return nil
    }

    /// The bytes the tenant's topics retain in this component now (committed messages not yet trimmed): what
    /// `maxPubsubBytes` limits. The tenant is the component's partition (`PubSubPartition`) `<namespace>`: a lookup
    /// of a total the component keeps, not a sum over topics.
    package var retainedBytes: Int { pubsub.retainedBytes(inPartition: app.namespace) }

    /// Whether the caller may publish to `topic` (the component's topic scopes).
    package func mayPublish(_ topic: String) -> Bool { policy.mayPublish(topic, app: app.appId) }

    /// Whether the caller may subscribe to `topic`.
    package func maySubscribe(_ topic: String) -> Bool { policy.maySubscribe(topic, app: app.appId) }

    /// The caller's consumer of `topic`: its consumer group (see `PubSubTopicPolicy.consumerGroup`) on the
    /// tenant's topic, both prefixed.
    package func consumer(_ topic: String) throws(APIError) -> PubSubConsumer {
        PubSubConsumer(group: prefix + policy.consumerGroup(for: app), topic: try physicalTopic(topic))
    }

    /// Runs one operation on the component, fairly queued against other tenants when it blocks.
    func run<T: Sendable>(
        on eventLoop: any EventLoop, _ operation: @escaping @Sendable (any PubSub) -> Eventual<T>
    ) -> Eventual<T> {
        pool.run(pubsub, namespace: app.namespace, tenant: tenant, on: eventLoop, operation)
    }

    /// Appends `messages` to a physical topic (from `physicalTopic`), all or none. With a `partitionLimit` (the
    /// tenant's `maxPubsubBytes`), the component refuses with `PubSubError.partitionFull` a publish that would take
    /// the tenant's retained bytes above it: checked in the component's commit order, so concurrent publishes of
    /// one tenant cannot overshoot it together.
    package func publish(
        _ messages: [PubSubMessage], toPhysical topic: String, partitionLimit: Int? = nil, on eventLoop: any EventLoop
    ) -> Eventual<[UInt64]> {
        run(on: eventLoop) { $0.publish(messages, to: topic, partitionLimit: partitionLimit, on: eventLoop) }
    }

    /// Creates the caller's consumer of `topic` if it does not exist (its cursor at the end of the log).
    package func ensureConsumer(_ topic: String, on eventLoop: any EventLoop) -> Eventual<UInt64> {
        do {
            let consumer = try consumer(topic)
            return run(on: eventLoop) { $0.ensureConsumer(consumer, on: eventLoop) }
        } catch {
            return .failure(error)
        }
    }

    /// Leases up to `limit` messages of the caller's consumer of `topic`.
    package func fetch(
        _ topic: String, limit: Int, lease: Duration? = nil, on eventLoop: any EventLoop
    ) -> Eventual<PubSubFetchResult> {
        do {
            let consumer = try consumer(topic)
            return run(on: eventLoop) { $0.fetch(consumer, limit: limit, lease: lease, on: eventLoop) }
        } catch {
            return .failure(error)
        }
    }

    /// Acknowledges deliveries of the caller's consumer of `topic`.
    package func ack(_ topic: String, _ ids: [PubSubDeliveryID], on eventLoop: any EventLoop) -> Eventual<Int> {
        do {
            let consumer = try consumer(topic)
            return run(on: eventLoop) { $0.ack(consumer, ids, on: eventLoop) }
        } catch {
            return .failure(error)
        }
    }

    /// Gives deliveries of the caller's consumer of `topic` back, deliverable again after `retryAfter`.
    package func nack(
        _ topic: String, _ ids: [PubSubDeliveryID], retryAfter: Duration, on eventLoop: any EventLoop
    ) -> Eventual<Int> {
        do {
            let consumer = try consumer(topic)
            return run(on: eventLoop) { $0.nack(consumer, ids, retryAfter: retryAfter, on: eventLoop) }
        } catch {
            return .failure(error)
        }
    }

    // MARK: TenantScope

    package static var block: BuildingBlock { .pubsub }

    package static func partitioning(of spec: ComponentSpec) throws(ConfigurationError) -> PubSubTopicPolicy {
        try PubSubTopicPolicy(metadata: spec.metadata, source: spec.source)
    }

    package static func opener(
        _ make: ComponentDescriptor.Make, _ definition: ComponentDefinition, _ context: ComponentContext
    ) throws(ComponentDefinitionError) -> ComponentDescriptor.Opener<any PubSub>? {
        switch make {
        case .pubsub(let factory): try factory(definition, context)
        case .state, .secretstores: nil
        }
    }

    package static func close(_ component: any PubSub, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        component.close(on: eventLoop)
    }

    package static func capabilities(of component: any PubSub) -> [String] { component.features.daprNames }

    /// Bytes retained per tenant: the component's totals by partition (`<namespace>`), which it keeps as topics
    /// change (the runtime names every topic `<namespace>||<topic>`).
    package static func usageByPartition(of component: any PubSub) -> [String: Int] { component.usageByPartition }

    package static func notConfigured(_ name: String) -> APIError { PubSubAPIError.notConfigured(name) }
    package static func notFound(_ name: String) -> APIError { PubSubAPIError.notFound(name) }
    package static func unavailable(_ health: ComponentHealth) -> APIError { PubSubAPIError.unavailable(health) }
}
