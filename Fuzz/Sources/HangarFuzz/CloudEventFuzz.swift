import Foundation
import HangarComponents
import HangarRuntime

/// Publishing and delivery of a payload: the envelope Hangar stores for it (passed through when the payload is a
/// CloudEvent, built around it otherwise) must be a JSON object its own decoder reads back, and, when Hangar built
/// it, deliverable.
enum CloudEventFuzz {
    static let contentTypes = [
        "application/cloudevents+json", "application/json", "text/plain", "application/cloudevents+json; charset=utf-8",
        "application/octet-stream", "", "APPLICATION/JSON;x=y", "application/cloudevents+protobuf",
    ]

    /// Input: one byte of options (bits 0-2: the content type; bit 3: a TTL; bit 4: CloudEvent overrides in the
    /// metadata), then the payload.
    static func run(_ input: ArraySlice<UInt8>) {
        var input = input
        let options = input.popFirst() ?? 0
        let contentType = contentTypes[Int(options & 7)]
        let metadata: [String: String] =
            options & 0x10 != 0
            ? ["cloudevent.id": "id-1", "cloudevent.source": "src", "cloudevent.type": "t", "cloudevent.subject": "s"]
            : [:]
        let envelope = CloudEventEnvelope(
            source: "app", topic: "orders", pubsubName: "pubsub", dataContentType: contentType, data: Data(input),
            metadata: metadata, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            envelopeTTL: options & 8 != 0 ? .seconds(60) : nil)
        let encoded: Data
        do {
            encoded = try envelope.encoded(
                now: Date(timeIntervalSince1970: 1_763_000_000), timeZone: TimeZone(identifier: "UTC"), id: { "id" })
        } catch {
            return  // a payload that claims to be a CloudEvent and is not a JSON object: refused
        }
        guard case .object? = GoJSON.decodePrefix(encoded) else {
            preconditionFailure(
                "the envelope for \(contentType) is not a JSON object: \(String(decoding: encoded, as: UTF8.self))")
        }
        let message = PubSubMessage(data: encoded, contentType: CloudEventEnvelope.contentType)
        do {
            _ = try SubscriptionEvent.make(message, topic: "orders", pubsubName: "pubsub", path: "/orders")
        } catch {
            // A CloudEvent passed through as published may be undeliverable (say its data_base64 is not base64): Dapr
            // accepts it too and drops it at delivery, as the delivery loops do. One Hangar built must be deliverable.
            precondition(
                CloudEventEnvelope.isContentType(contentType, "application/cloudevents+json"),
                "an envelope Hangar built cannot be delivered: \(error)")
        }
        // The decoder and the encoder agree: what is decoded and encoded again decodes to the same value.
        if let value = GoJSON.decodePrefix(input) {
            precondition(GoJSON.decodePrefix(value.encoded) == value, "GoJSON does not read back what it wrote")
        }
    }
}
