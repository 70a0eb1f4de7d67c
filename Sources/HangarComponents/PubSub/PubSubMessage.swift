package import Foundation

/// A message as a publisher hands it to a pub/sub component. `data` is opaque to the component: for Dapr it is the
/// CloudEvent envelope the runtime built (or the raw payload with `rawPayload`).
package struct PubSubMessage: Sendable, Hashable {
    package var data: Data
    /// The content type of `data` (for a CloudEvent envelope, `application/cloudevents+json`), kept verbatim.
    package var contentType: String
    /// Key/value metadata delivered with the message (Dapr's broker metadata), kept verbatim.
    package var metadata: [String: String]
    /// Time to live from the publish: once it has passed, the message is never delivered. Nil: no expiry.
    package var ttl: Duration?

    package init(data: Data, contentType: String = "", metadata: [String: String] = [:], ttl: Duration? = nil) {
        self.data = data
        self.contentType = contentType
        self.metadata = metadata
        self.ttl = ttl
    }

    /// What the message counts for in byte accounting and limits: its data, content type and metadata keys and
    /// values, as stored.
    package var byteCount: Int {
        var count = data.count + contentType.utf8.count
        for (key, value) in metadata { count += key.utf8.count + value.utf8.count }
        return count
    }
}

/// A consumer of a topic: one consumer group's view of one topic, with its own cursor and its own pending
/// (leased, unacknowledged) messages. Every process fetching for the same group competes for the same messages
/// (replicas of one app share the work); two groups each receive every message (fan-out).
///
/// Both names are opaque to the component: the runtime passes the physical topic (namespace-prefixed) and the
/// subscribing app's identity as the group.
package struct PubSubConsumer: Sendable, Hashable, CustomStringConvertible {
    package var group: String
    package var topic: String

    package init(group: String, topic: String) {
        self.group = group
        self.topic = topic
    }

    package var description: String { "\(group) on \(topic)" }
}

/// Identifies one delivery of one message to a consumer: the message's sequence and the attempt it was delivered
/// in. An ack or nack names the delivery, so one that arrives after the message was leased again (its lease
/// expired and it was redelivered) is stale and ignored: only the latest delivery's id settles the message.
package struct PubSubDeliveryID: Sendable, Hashable, CustomStringConvertible {
    package var sequence: UInt64
    package var attempt: Int

    package init(sequence: UInt64, attempt: Int) {
        self.sequence = sequence
        self.attempt = attempt
    }

    package var description: String { "\(sequence)#\(attempt)" }
}

/// One message leased to a consumer by `fetch`.
package struct PubSubDelivery: Sendable, Hashable {
    /// The topic's sequence number of the message: increasing in publish order within the topic, never reused.
    package var sequence: UInt64
    /// 1 on the first delivery to this consumer, then one more each time the message is leased again (after a
    /// lease expired or a nack).
    package var attempt: Int
    package var message: PubSubMessage
    /// When the message was published (the component's clock, millisecond precision).
    package var publishedAt: Date
    /// When its TTL ends, if it has one.
    package var expiresAt: Date?

    package init(sequence: UInt64, attempt: Int, message: PubSubMessage, publishedAt: Date, expiresAt: Date?) {
        self.sequence = sequence
        self.attempt = attempt
        self.message = message
        self.publishedAt = publishedAt
        self.expiresAt = expiresAt
    }

    /// What an ack or nack of this delivery names.
    package var id: PubSubDeliveryID { PubSubDeliveryID(sequence: sequence, attempt: attempt) }
}

/// What `fetch` returns: the deliveries, and when the consumer's next pending message becomes deliverable again
/// (so that the runtime can sleep until then instead of polling).
package struct PubSubFetchResult: Sendable, Hashable {
    /// Redeliveries first, then new messages: all in sequence order.
    package var deliveries: [PubSubDelivery]
    /// The earliest time a message leased or nacked earlier becomes deliverable again; nil when none is pending
    /// or the batch was full (the runtime fetches again at once anyway).
    package var nextRedeliveryAt: Date?

    package init(deliveries: [PubSubDelivery], nextRedeliveryAt: Date? = nil) {
        self.deliveries = deliveries
        self.nextRedeliveryAt = nextRedeliveryAt
    }
}
