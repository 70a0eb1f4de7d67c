package import Foundation
package import HangarComponents

/// One event as a subscriber receives it: Dapr's `TopicEventRequest`, built from the stored message as Dapr's
/// `GRPCEnvelopeFromSubscriptionMessage` builds it (reference §3.1). Transport-neutral: the gRPC front-end turns
/// it into the protobuf message (`extensions` become a `Struct`).
///
/// The stored envelope is parsed once per delivery, with `GoJSON` (on the bytes in place), and every field is
/// taken from that parse: routing rules are evaluated on it too (`RouteMatch`), and the HTTP body is the stored
/// bytes themselves.
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
    /// Every CloudEvent attribute but the ones above and `data`/`data_base64`, as decoded. Numbers keep their
    /// literals here; a `Struct` holds them as doubles, which is what Dapr's float64 decoding gives too.
    package var extensions: [String: GoJSON]

    package init(
        id: String, source: String, type: String, specVersion: String, dataContentType: String, data: Data,
        topic: String, pubsubName: String, path: String, extensions: [String: GoJSON]
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
        self.extensions = extensions
    }

    /// The attributes that have their own field and do not go into `extensions`.
    static let ownFields: [String] = ["id", "source", "datacontenttype", "type", "specversion", "data", "data_base64"]

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
    ) throws -> [String: GoJSON] {
        if !raw, message.contentType == CloudEventEnvelope.contentType {
            guard case .object(let object)? = GoJSON.decodePrefix(message.data) else {
                throw PubSubError.invalidArgument("the stored CloudEvent is not a JSON object")
            }
            return object
        }
        var event: [String: GoJSON] = [
            "id": .string(UUID().uuidString.lowercased()), "specversion": .string("1.0"),
            "datacontenttype": .string("application/octet-stream"), "source": .string("Dapr"),
            "type": .string("com.dapr.event.sent"), "data_base64": .string(message.data.base64EncodedString()),
        ]
        for key in ["traceid", "traceparent", "tracestate"] {
            if let value = message.metadata[key] { event[key] = .string(value) }
        }
        event["topic"] = .string(topic)
        event["pubsubname"] = .string(pubsubName)
        return event
    }

    /// The event for a CloudEvent (`cloudEvent(of:)`) delivered to `path`.
    package init(cloudEvent event: [String: GoJSON], topic: String, pubsubName: String, path: String) throws {
        let contentType = Self.string(event["datacontenttype"])
        var extensions = event
        for key in Self.ownFields { extensions.removeValue(forKey: key) }
        self.init(
            id: Self.string(event["id"]), source: Self.string(event["source"]), type: Self.string(event["type"]),
            specVersion: Self.string(event["specversion"]), dataContentType: contentType,
            data: try Self.data(of: event, contentType: contentType), topic: topic, pubsubName: pubsubName,
            path: path, extensions: extensions)
    }

    /// An attribute as Dapr's `ExtractCloudEventProperty` reads it: a string, else empty.
    static func string(_ value: GoJSON?) -> String {
        if case .string(let text)? = value { return text }
        return ""
    }

    /// The event's data as Dapr delivers it over gRPC: `data_base64` decoded (anything but a base64 string fails);
    /// else, for text types (`text/*`, `application/xml`), a string's bytes (anything but a string fails); for
    /// `application/json` and `application/cloudevents+json`, the value as `json.Marshal` writes it after
    /// decoding numbers as float64; for any other type, nothing. A `null` is no value.
    static func data(of event: [String: GoJSON], contentType: String) throws -> Data {
        if let encoded = event["data_base64"], encoded != .null {
            guard case .string(let text) = encoded, let bytes = Data(base64Encoded: text) else {
                throw PubSubError.invalidArgument("data_base64 is not valid base64")
            }
            return bytes
        }
        guard let value = event["data"], value != .null else { return Data() }
        if isStringContentType(contentType) {
            guard case .string(let text) = value else {
                throw PubSubError.invalidArgument("the data of a \(contentType) event is not a string")
            }
            return Data(text.utf8)
        }
        if CloudEventEnvelope.isContentType(contentType, "application/json")
            || CloudEventEnvelope.isContentType(contentType, "application/cloudevents+json")
        {
            return Data(try value.encodedAsFloat64())
        }
        return Data()
    }

    /// components-contrib's `IsStringContentType`: `text/…` (any case), or `application/xml`.
    static func isStringContentType(_ contentType: String) -> Bool {
        let lowered = contentType.utf8.prefix(5).lazy.map { $0 >= 0x41 && $0 <= 0x5A ? $0 + 0x20 : $0 }
        if lowered.elementsEqual("text/".utf8) { return true }
        return CloudEventEnvelope.isContentType(contentType, "application/xml")
    }
}
