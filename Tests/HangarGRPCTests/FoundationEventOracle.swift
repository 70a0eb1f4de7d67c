import Foundation
import HangarComponents
import HangarRuntime
import SwiftProtobuf

@testable import HangarGRPC

/// How the `TopicEventRequest` was built before the delivery path parsed envelopes with `GoJSON`: the stored
/// CloudEvent read with `JSONSerialization` into `[String: Any]`, the extensions written back as JSON (keys
/// sorted) and read into a `Struct` by SwiftProtobuf's JSON parser, JSON data re-serialised by `JSONSerialization`.
/// Kept as the reference the new path is compared with (`TopicEventRequestTests`).
enum FoundationEventOracle {
    struct Invalid: Error {}

    static let ownFields: Set<String> = [
        "id", "source", "datacontenttype", "type", "specversion", "data", "data_base64",
    ]

    static func request(
        _ message: PubSubMessage, topic: String, pubsubName: String, path: String
    ) throws -> Dapr_Proto_Runtime_V1_TopicEventRequest {
        let event = try cloudEvent(of: message, topic: topic, pubsubName: pubsubName)
        let contentType = event["datacontenttype"] as? String ?? ""
        var extensions = event
        for key in ownFields { extensions.removeValue(forKey: key) }
        var request = Dapr_Proto_Runtime_V1_TopicEventRequest()
        request.id = event["id"] as? String ?? ""
        request.source = event["source"] as? String ?? ""
        request.type = event["type"] as? String ?? ""
        request.specVersion = event["specversion"] as? String ?? ""
        request.dataContentType = contentType
        request.data = try data(of: event, contentType: contentType)
        request.topic = topic
        request.pubsubName = pubsubName
        request.path = path
        request.extensions = try Google_Protobuf_Struct(
            jsonUTF8Data: JSONSerialization.data(withJSONObject: extensions, options: [.sortedKeys, .withoutEscapingSlashes]))
        return request
    }

    static func cloudEvent(of message: PubSubMessage, topic: String, pubsubName: String) throws -> [String: Any] {
        if message.contentType == CloudEventEnvelope.contentType {
            guard let object = try JSONSerialization.jsonObject(with: message.data) as? [String: Any] else {
                throw Invalid()
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

    static func data(of event: [String: Any], contentType: String) throws -> Data {
        if let encoded = event["data_base64"] {
            guard let text = encoded as? String, let bytes = Data(base64Encoded: text) else { throw Invalid() }
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
