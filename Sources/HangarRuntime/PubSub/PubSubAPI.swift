package import Foundation
package import HangarComponents
package import NIOCore

/// One `PublishEvent`, as both front-ends decode it.
package struct PublishRequest: Sendable {
    package var pubsubName: String
    package var topic: String
    package var data: Data
    /// The payload's content type as given (gRPC `data_content_type`, HTTP `Content-Type`); empty: none.
    package var contentType: String
    /// Request metadata (gRPC `metadata`, HTTP `metadata.<key>` query parameters): read for `rawPayload`, the TTL and
    /// the `cloudevent.*` overrides, and stored with the message for the component and subscribers, as Dapr does.
    package var metadata: [String: String]
    package var trace: PublishTrace
    /// With `rawPayload`, the span's `traceid` and `tracestate` are added to the message's metadata (Dapr's gRPC
    /// API does this; its HTTP API does not).
    package var traceInRawMetadata: Bool

    package init(
        pubsubName: String, topic: String, data: Data, contentType: String = "", metadata: [String: String] = [:],
        trace: PublishTrace = PublishTrace(), traceInRawMetadata: Bool = false
    ) {
        self.pubsubName = pubsubName
        self.topic = topic
        self.data = data
        self.contentType = contentType
        self.metadata = metadata
        self.trace = trace
        self.traceInRawMetadata = traceInRawMetadata
    }
}

/// One entry of a bulk publish.
package struct BulkPublishEntry: Sendable {
    package var entryId: String
    package var event: Data
    package var contentType: String
    /// The entry's own metadata; nil when it has none. As in Dapr, the request's metadata is merged under an
    /// entry's own (entry keys win) only when it has some; an entry without any builds its envelope with no
    /// metadata (no overrides, no TTL) and is stored with the request's.
    package var metadata: [String: String]?

    package init(entryId: String, event: Data, contentType: String = "", metadata: [String: String]? = nil) {
        self.entryId = entryId
        self.event = event
        self.contentType = contentType
        self.metadata = metadata
    }
}

/// Where a publish goes, once the request's names and metadata are checked: the caller's handle on the component,
/// the topic as the app names it and as it is stored, and whether the payload is raw.
package struct PublishTarget: Sendable {
    package let caller: Caller
    package let handle: TenantPubSubHandle
    package let topic: String
    package let physicalTopic: String
    package let rawPayload: Bool
    package let metadata: [String: String]

    package var pubsubName: String { handle.name }
}

/// The pub/sub building block's publishing half: Dapr's publish semantics written once for both front-ends (as
/// Dapr's `pkg/api/grpc` and `pkg/api/http` share `validateAndGetPubsubAndTopic` and the publisher adapter).
///
/// A publish goes through, in Dapr's order: the component lookup (`ERR_PUBSUB_NOT_CONFIGURED`, `ERR_PUBSUB_EMPTY`,
/// `ERR_PUBSUB_NOT_FOUND`), the topic (`ERR_TOPIC_NAME_EMPTY`, then Hangar's refusal of hostile names), the
/// metadata (`rawPayload`, the TTL: `ERR_PUBSUB_REQUEST_METADATA`), the envelope (`ERR_PUBSUB_CLOUD_EVENTS_SER`),
/// the topic scopes (`ERR_PUBSUB_FORBIDDEN`), the tenant's `maxPubsubBytes`, and the component
/// (`ERR_PUBSUB_PUBLISH_MESSAGE`). It completes once the component has committed the messages (on a durable
/// component, on stable storage).
package struct PubSubAPI: Sendable {
    package let components: ComponentHost
    /// Where each tenant's account (weight, `maxPubsubBytes`) is found; nil in tests that need no quotas.
    package let registry: TenantRegistry?
    package let metrics: RuntimeMetrics
    /// The clock of the envelopes' `time` and `expiration`.
    let now: @Sendable () -> Date
    /// The node's running delivery loops, streaming (`subscribe`) and pushed (`PushDelivery`).
    package let subscriptions = DeliveryLoops()

    package init(
        components: ComponentHost, registry: TenantRegistry? = nil, metrics: RuntimeMetrics = RuntimeMetrics(),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.components = components
        self.registry = registry
        self.metrics = metrics
        self.now = now
    }

    /// Dapr's `validateAndGetPubsubAndTopic`: the component, the topic and `rawPayload`, checked in Dapr's order.
    /// The HTTP bulk route calls it before it reads the body, as Dapr does.
    package func target(
        _ caller: Caller, pubsubName: String, topic: String, metadata: [String: String]
    ) throws(APIError) -> PublishTarget {
        if pubsubName.isEmpty {
            if !components.has(.pubsub, for: caller.app) { throw PubSubAPIError.notConfigured(pubsubName) }
            throw PubSubAPIError.nameEmpty()
        }
        let handle = try components.scoped(
            TenantPubSubHandle.self, named: pubsubName, for: caller, tenant: registry?.tenantAccount(caller.namespace))
        if topic.isEmpty { throw PubSubAPIError.topicEmpty(pubsubName) }
        let physicalTopic = try handle.physicalTopic(topic)
        return PublishTarget(
            caller: caller, handle: handle, topic: topic, physicalTopic: physicalTopic,
            rawPayload: try Self.rawPayload(metadata, pubsub: pubsubName), metadata: metadata)
    }

    /// `PublishEvent`.
    package func publish(_ caller: Caller, _ request: PublishRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        let target: PublishTarget
        let message: PubSubMessage
        do {
            target = try self.target(
                caller, pubsubName: request.pubsubName, topic: request.topic, metadata: request.metadata)
            var metadata = request.metadata
            let span = request.trace.span()
            if target.rawPayload, request.traceInRawMetadata {
                metadata["traceid"] = span.traceparent
                metadata["tracestate"] = span.tracestate
            }
            message = try self.message(
                target, data: request.data, contentType: request.contentType, envelopeMetadata: request.metadata,
                storedMetadata: metadata, span: span)
        } catch {
            return .failure(error)
        }
        return send([message], to: target, on: eventLoop).map { _ in }
    }

    /// `BulkPublishEvent` (and `BulkPublishEventAlpha1`): every entry checked and wrapped, then published all or
    /// none. After the component fails, the error is a `BulkPublishFailure` naming every entry.
    package func bulkPublish(
        _ caller: Caller, pubsubName: String, topic: String, entries: [BulkPublishEntry], metadata: [String: String],
        trace: PublishTrace, on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        do {
            let target = try self.target(caller, pubsubName: pubsubName, topic: topic, metadata: metadata)
            return bulkPublish(target, entries: entries, trace: trace, on: eventLoop)
        } catch {
            return .failure(error)
        }
    }

    /// A bulk publish to a checked target (the HTTP route checks it before reading the body).
    package func bulkPublish(
        _ target: PublishTarget, entries: [BulkPublishEntry], trace: PublishTrace, on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        var messages: [PubSubMessage] = []
        messages.reserveCapacity(entries.count)
        do {
            var seen: Set<String> = []
            let span = trace.span()
            for entry in entries {
                guard !entry.entryId.isEmpty, seen.insert(entry.entryId).inserted else {
                    throw PubSubAPIError.entryID(target.pubsubName, topic: target.topic, app: target.caller.app)
                }
                let own = entry.metadata.map { target.metadata.merging($0) { $1 } }
                messages.append(
                    try message(
                        target, data: entry.event, contentType: entry.contentType, envelopeMetadata: own ?? [:],
                        storedMetadata: own ?? target.metadata, span: PublishTrace.child(of: span)))
            }
        } catch {
            return .failure(error)
        }
        if messages.isEmpty {
            // Nothing to store, but the scopes still answer, as Dapr's adapter checks them first.
            guard target.handle.mayPublish(target.topic) else {
                return .failure(PubSubAPIError.forbidden(target.pubsubName, topic: target.topic, app: target.caller.app))
            }
            return .success(())
        }
        return send(messages, to: target, on: eventLoop).map { _ in }.mapError { error in
            guard let error = error as? APIError, error.errorCode == "ERR_PUBSUB_PUBLISH_MESSAGE" else { return error }
            let text = error.errorMetadata["error"] ?? error.message
            return BulkPublishFailure(error: error, failedEntries: entries.map { ($0.entryId, text) })
        }
    }

    /// The message to store for one payload: its envelope (unless raw), its metadata and its TTL.
    /// `envelopeMetadata` is what the envelope reads (overrides, TTL); `storedMetadata` goes with the message.
    func message(
        _ target: PublishTarget, data: Data, contentType: String, envelopeMetadata: [String: String],
        storedMetadata: [String: String], span: (traceparent: String, tracestate: String)
    ) throws(APIError) -> PubSubMessage {
        let ttl = try Self.ttl(envelopeMetadata, pubsub: target.pubsubName)
        let componentTTL = target.handle.pubsub.features.contains(.messageTTL)
        guard !target.rawPayload else {
            return PubSubMessage(
                data: data, contentType: contentType, metadata: storedMetadata, ttl: componentTTL ? ttl : nil)
        }
        let envelope = CloudEventEnvelope(
            source: target.caller.appId, topic: target.topic, pubsubName: target.pubsubName,
            dataContentType: contentType, data: data, metadata: envelopeMetadata, traceparent: span.traceparent,
            tracestate: span.tracestate, envelopeTTL: componentTTL ? nil : ttl)
        do {
            return PubSubMessage(
                data: try envelope.encoded(now: now()), contentType: CloudEventEnvelope.contentType,
                metadata: storedMetadata, ttl: componentTTL ? ttl : nil)
        } catch {
            throw PubSubAPIError.cloudEventCreation(target.pubsubName, app: target.caller.app, error.description)
        }
    }

    /// Checks the scopes and the tenant's `maxPubsubBytes`, publishes, and counts what was published.
    func send(_ messages: [PubSubMessage], to target: PublishTarget, on eventLoop: any EventLoop) -> Eventual<[UInt64]>
    {
        let handle = target.handle
        let app = target.caller.app
        guard handle.mayPublish(target.topic) else {
            return .failure(PubSubAPIError.forbidden(target.pubsubName, topic: target.topic, app: app))
        }
        let bytes = messages.reduce(0) { $0 + $1.byteCount }
        // The tenant's `maxPubsubBytes` is checked by the component against its own running total for the tenant's
        // partition, in commit order: no per-publish sum over topics, and no overshoot by concurrent publishes.
        let limit = handle.tenant?.maxPubsubBytes
        let metrics = self.metrics
        let pubsubName = target.pubsubName
        let topic = target.topic
        return handle.publish(messages, toPhysical: target.physicalTopic, partitionLimit: limit, on: eventLoop).map {
            sequences in
            metrics.recordPublish(
                app: app, component: pubsubName, topic: topic, messages: messages.count, bytes: bytes)
            return sequences
        }.mapError { error in
            if case .partitionFull(_, let usage, let limit)? = error as? PubSubError {
                metrics.recordQuotaRefusal(app: app, quota: "maxPubsubBytes")
                return QuotaError.pubsubBytes(usage: usage, limit: limit, namespace: app.namespace, pubsub: pubsubName)
            }
            return PubSubAPIError.publish(error, pubsub: pubsubName, topic: topic)
        }
    }

    /// `rawPayload`, as Go's `strconv.ParseBool` reads it; absent or empty is false.
    static func rawPayload(_ metadata: [String: String], pubsub: String) throws(APIError) -> Bool {
        guard let text = metadata["rawPayload"], !text.isEmpty else { return false }
        switch text {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default:
            throw PubSubAPIError.metadata(pubsub, "rawPayload value must be a valid boolean: actual is '\(text)'")
        }
    }

    /// The message's TTL: `ttl` or `ttlInSeconds` (keys in any case, `ttl` first), a Go duration (`10s`, `1h30m`)
    /// or whole seconds, positive. Dapr ignores a bad value when it adds `expiration` itself and lets a TTL-capable
    /// component fail the publish; Hangar's components all expire messages themselves, so a bad value is refused
    /// here, before anything is stored.
    static func ttl(_ metadata: [String: String], pubsub: String) throws(APIError) -> Duration? {
        var found: (key: String, value: String)?
        for wanted in ["ttl", "ttlinseconds"] {
            if let entry = metadata.first(where: { $0.key.lowercased() == wanted }) {
                found = (entry.key, entry.value)
                break
            }
        }
        guard let (key, text) = found, !text.isEmpty else { return nil }
        if let seconds = Int(text) {
            guard seconds > 0 else {
                throw PubSubAPIError.metadata(pubsub, "\(key) value must be higher than zero: actual is '\(text)'")
            }
            return .seconds(seconds)
        }
        guard let duration = GoDuration.parse(text), duration > .zero else {
            throw PubSubAPIError.metadata(
                pubsub, "\(key) value must be a valid integer or a positive duration: actual is '\(text)'")
        }
        return duration
    }
}
