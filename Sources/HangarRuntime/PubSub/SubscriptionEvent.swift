package import Foundation
package import HangarComponents

/// One event as a subscriber receives it: Dapr's `TopicEventRequest`, built from the stored message as Dapr's
/// `GRPCEnvelopeFromSubscriptionMessage` builds it (reference §3.1). Transport-neutral: the gRPC front-end turns
/// it into the protobuf message (`extensions` travel as a JSON object, which becomes a `Struct`).
package struct SubscriptionEvent: Sendable {
    package var id: String
    package var source: String
    package var type: String
    package var specVersion: String
    package var dataContentType: String
    package var data: Data
    package var topic: String
    package var pubsubName: String
    package var path: String
    /// Every CloudEvent attribute but the ones above and `data`/`data_base64`, as a JSON object.
    package var extensionsJSON: Data

    package init(
        id: String, source: String, type: String, specVersion: String, dataContentType: String, data: Data,
        topic: String, pubsubName: String, path: String, extensionsJSON: Data
    ) {
        self.id = id
        self.source = source
        self.type = type
        self.specVersion = specVersion
        self.dataContentType = dataContentType
        self.data = data
        self.topic = topic
        self.pubsubName = pubsubName
        self.path = path
        self.extensionsJSON = extensionsJSON
    }

    /// The attributes that have their own field and do not go into `extensions`.
    static let ownFields: Set<String> = [
        "id", "source", "datacontenttype", "type", "specversion", "data", "data_base64",
    ]

    /// Builds the event for `message` delivered on `topic` (as the app names it). The envelope's own `topic` and
    /// `pubsubname` stay in `extensions` as stored (a dead-lettered message keeps its original topic there). A
    /// message that is not a CloudEvent (published with `rawPayload`) gets the envelope Dapr makes up for it: a new
    /// id, source `Dapr`, content type `application/octet-stream`, its bytes as data. Fails when a CloudEvent cannot
    /// be parsed.
    package static func make(
        _ message: PubSubMessage, topic: String, pubsubName: String, path: String
    ) throws -> SubscriptionEvent {
        try SubscriptionEvent(
            cloudEvent: cloudEvent(of: message, topic: topic, pubsubName: pubsubName), topic: topic,
            pubsubName: pubsubName, path: path)
    }

    /// The CloudEvent `message` is delivered as, a JSON object: the stored envelope parsed; or, for a message
    /// that is not a CloudEvent or any message of a `rawPayload` subscription (`raw`), the envelope Dapr makes up
    /// (reference §3.1). Fails when a stored CloudEvent cannot be parsed.
    package static func cloudEvent(
        of message: PubSubMessage, topic: String, pubsubName: String, raw: Bool = false
    ) throws -> [String: Any] {
        if !raw, message.contentType == CloudEventEnvelope.contentType {
            guard let object = try JSONSerialization.jsonObject(with: message.data) as? [String: Any] else {
                throw PubSubError.invalidArgument("the stored CloudEvent is not a JSON object")
            }
            return object
        }
        var event: [String: Any] = [
            "id": UUID().uuidString.lowercased(), "specversion": "1.0",
            "datacontenttype": "application/octet-stream", "source": "Dapr", "type": "com.dapr.event.sent",
            "data_base64": message.data.base64EncodedString(),
        ]
        for key in ["traceid", "traceparent", "tracestate"] {
            if let value = message.metadata[key] { event[key] = value }
        }
        event["topic"] = topic
        event["pubsubname"] = pubsubName
        return event
    }

    /// The event for a CloudEvent (`cloudEvent(of:)`) delivered to `path`.
    package init(cloudEvent event: [String: Any], topic: String, pubsubName: String, path: String) throws {
        let contentType = event["datacontenttype"] as? String ?? ""
        var extensions = event
        for key in Self.ownFields { extensions.removeValue(forKey: key) }
        self.init(
            id: event["id"] as? String ?? "", source: event["source"] as? String ?? "",
            type: event["type"] as? String ?? "", specVersion: event["specversion"] as? String ?? "",
            dataContentType: contentType, data: try Self.data(of: event, contentType: contentType), topic: topic,
            pubsubName: pubsubName, path: path,
            extensionsJSON: try JSONSerialization.data(
                withJSONObject: extensions, options: [.sortedKeys, .withoutEscapingSlashes]))
    }

    /// The event's data as Dapr delivers it over gRPC: `data_base64` decoded; else a string as its bytes for text
    /// and XML types; else, for JSON types, the value re-serialised (keys sorted); else nothing.
    static func data(of event: [String: Any], contentType: String) throws -> Data {
        if let encoded = event["data_base64"] {
            guard let text = encoded as? String, let bytes = Data(base64Encoded: text) else {
                throw PubSubError.invalidArgument("data_base64 is not valid base64")
            }
            return bytes
        }
        guard let value = event["data"], !(value is NSNull) else { return Data() }
        let type = contentType.lowercased()
        if type.hasPrefix("text/") || type.hasPrefix("application/xml") {
            if let text = value as? String { return Data(text.utf8) }
        }
        let base = type.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        if base == "application/json" || base.hasSuffix("+json") || type.hasPrefix("text/") {
            return try JSONSerialization.data(
                withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes])
        }
        return Data()
    }
}
