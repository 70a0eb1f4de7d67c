package import Foundation

/// One pub/sub event pushed to an app over its app channel: gRPC `AppCallback.OnTopicEvent`, or an HTTP POST to the
/// matched route (reference §3.2, §3.3).
package struct AppTopicEvent: Sendable {
    /// The event as a gRPC app receives it (`TopicEventRequest`), its `path` the matched route's, verbatim.
    package var event: SubscriptionEvent
    /// The body an HTTP app receives: the stored envelope's bytes verbatim (for a raw payload, the envelope made up
    /// for it), sent as `application/cloudevents+json`.
    package var envelope: Data
    /// The broker metadata: the publish's metadata and `pubsubName`. gRPC metadata (keys lower-cased) for a gRPC
    /// app, headers for an HTTP app.
    package var metadata: [String: String]
    /// The W3C trace context the envelope carries (empty: none), sent as `traceparent`/`tracestate`.
    package var traceparent: String
    package var tracestate: String

    package init(
        event: SubscriptionEvent, envelope: Data, metadata: [String: String], traceparent: String = "",
        tracestate: String = ""
    ) {
        self.event = event
        self.envelope = envelope
        self.metadata = metadata
        self.traceparent = traceparent
        self.tracestate = tracestate
    }
}

/// Events pushed to an app in one call, for a subscription with `bulkSubscribe` enabled: gRPC
/// `OnBulkTopicEvent` (or `OnBulkTopicEventAlpha1`), or an HTTP POST of Dapr's bulk JSON (reference §3.2, §3.3).
package struct AppBulkTopicEvent: Sendable {
    /// One event of the batch.
    package struct Entry: Sendable {
        /// Unique in the batch: what the app's statuses name.
        package var entryId: String
        package var event: SubscriptionEvent
        /// The CloudEvent as stored (or made up for a raw payload), for an HTTP app's `event`.
        package var envelope: Data
        /// The message's own bytes, for a `rawPayload` subscription (gRPC `bytes`, HTTP `event`); nil otherwise.
        package var rawPayload: Data?
        package var contentType: String
        package var metadata: [String: String]

        package init(
            entryId: String, event: SubscriptionEvent, envelope: Data, rawPayload: Data?, contentType: String,
            metadata: [String: String]
        ) {
            self.entryId = entryId
            self.event = event
            self.envelope = envelope
            self.rawPayload = rawPayload
            self.contentType = contentType
            self.metadata = metadata
        }
    }

    /// A new id for the batch.
    package var id: String
    package var topic: String
    package var pubsubName: String
    /// The route every entry matched.
    package var path: String
    /// The subscription's metadata and `pubsubName`.
    package var metadata: [String: String]
    package var entries: [Entry]

    package init(
        id: String, topic: String, pubsubName: String, path: String, metadata: [String: String], entries: [Entry]
    ) {
        self.id = id
        self.topic = topic
        self.pubsubName = pubsubName
        self.path = path
        self.metadata = metadata
        self.entries = entries
    }

    /// Dapr's `type` of a bulk request.
    package static let type = "com.dapr.event.sent.bulk"
}
