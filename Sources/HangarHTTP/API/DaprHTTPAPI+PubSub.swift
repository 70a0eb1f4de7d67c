import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

extension DaprHTTPAPI {
    /// The publish API, on the runtime's `PubSubAPI` (shared with the gRPC front-end). The topic is the rest of the
    /// path (it may contain `/`), percent-decoded; metadata comes from `metadata.<key>` query parameters.
    static var pubsub: [Route] {
        [
            Route([.POST, .PUT], "/v1.0/publish/bulk/{pubsub}/{topic...}", name: "BulkPublishEvent", .call(bulk)),
            Route(
                [.POST, .PUT], "/v1.0-alpha1/publish/bulk/{pubsub}/{topic...}", name: "BulkPublishEventAlpha1",
                .call(bulk)),
            Route([.POST, .PUT], "/v1.0/publish/{pubsub}/{topic...}", name: "PublishEvent", .call(publish)),
        ]
    }

    /// `POST /v1.0/publish/{pubsub}/{topic...}`: the body is the payload, its `Content-Type` the envelope's
    /// `datacontenttype` (none: `text/plain`); 204 once published.
    private static func publish(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let publish = PublishRequest(
            pubsubName: request.parameters["pubsub"], topic: try topic(request),
            data: Data(request.body.readableBytesView),
            contentType: request.head.headers.first(name: "content-type") ?? "", metadata: request.target.metadata,
            trace: trace(request.head.headers))
        return request.runtime.pubsub.publish(request.caller, publish, on: request.eventLoop).map {
            DaprHTTPJSON.noContent
        }
    }

    /// `POST /v1.0[-alpha1]/publish/bulk/{pubsub}/{topic...}`: a JSON array of `{entryId, event, contentType,
    /// metadata}`. The component and topic are checked before the entries are parsed (the body, bounded by the
    /// caller's `maxRequestBytes`, has been read by then); a failure after the entries were accepted answers `{"failedEntries", "errorCode"}` (`DaprHTTPError`).
    private static func bulk(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let pubsub = request.runtime.pubsub
        let target = try pubsub.target(
            request.caller, pubsubName: request.parameters["pubsub"], topic: try topic(request),
            metadata: request.target.metadata)
        let entries = try bulkEntries(request.body, target: target)
        return pubsub.bulkPublish(target, entries: entries, trace: trace(request.head.headers), on: request.eventLoop)
            .map { DaprHTTPJSON.noContent }
    }

    /// The topic: the path's tail, percent-decoded (as Dapr's router gives it); malformed escapes are refused.
    private static func topic(_ request: DaprHTTPRequest) throws(APIError) -> String {
        let raw = String(request.parameters.raw("topic") ?? "")
        guard let decoded = raw.removingPercentEncoding else {
            throw PubSubAPIError.invalidTopic(raw, "it is not valid percent-encoded UTF-8")
        }
        return decoded
    }

    private static func trace(_ headers: HTTPHeaders) -> PublishTrace {
        PublishTrace(incoming: headers.first(name: "traceparent"), incomingState: headers.first(name: "tracestate"))
    }

    /// The entries of a bulk body, each `event` turned into the bytes Dapr publishes for its `contentType`
    /// (`ConvertEventToBytes`): base64 for `application/octet-stream`, a string for `text/*` and
    /// `application/xml`, any JSON value (re-encoded as Go does) for `application/json` and
    /// `application/cloudevents+json`; any other content type, or none, is refused. JSON field names match in any
    /// case, as Go's decoder matches them.
    static func bulkEntries(_ body: ByteBuffer, target: PublishTarget) throws(APIError) -> [BulkPublishEntry] {
        func unmarshal(_ problem: String) -> APIError {
            PubSubAPIError.unmarshalEvents(target.pubsubName, topic: target.topic, app: target.caller.app, problem)
        }
        guard let json = GoJSON.decodePrefix(body.readableBytesView) else {
            throw unmarshal("the body is not valid JSON")
        }
        let items: [GoJSON]
        switch json {
        case .null: return []
        case .array(let array): items = array
        default: throw unmarshal("the body must be a JSON array of entries")
        }
        return try items.enumerated().map { (index, item) throws(APIError) -> BulkPublishEntry in
            guard case .object(let object) = item else { throw unmarshal("entry \(index) is not an object") }
            func field(_ name: String) -> GoJSON? {
                if let value = object[name] { return value }
                return object.first { $0.key.lowercased() == name.lowercased() }?.value
            }
            func string(_ name: String) throws(APIError) -> String {
                switch field(name) {
                case nil, .null: return ""
                case .string(let text): return text
                default: throw unmarshal("entry \(index): \(name) must be a string")
                }
            }
            var entry = BulkPublishEntry(
                entryId: try string("entryId"), event: Data(), contentType: try string("contentType"))
            switch field("metadata") {
            case nil, .null: break
            case .object(let members):
                var metadata: [String: String] = [:]
                for (key, value) in members {
                    guard case .string(let text) = value else {
                        throw unmarshal("entry \(index): metadata values must be strings")
                    }
                    metadata[key] = text
                }
                entry.metadata = metadata
            default: throw unmarshal("entry \(index): metadata must be an object of strings")
            }
            entry.event = try eventBytes(field("event") ?? .null, contentType: entry.contentType, target: target)
            return entry
        }
    }

    /// Dapr's `ConvertEventToBytes`.
    static func eventBytes(_ event: GoJSON, contentType: String, target: PublishTarget) throws(APIError) -> Data {
        func mismatch(_ problem: String = "error: mismatch between contentType and event") -> APIError {
            PubSubAPIError.marshalEnvelope(target.pubsubName, topic: target.topic, app: target.caller.app, problem)
        }
        let lower = contentType.lowercased()
        if CloudEventEnvelope.isContentType(contentType, "application/octet-stream") {
            guard case .string(let text) = event else { throw mismatch() }
            guard let data = Data(base64Encoded: text) else {
                throw mismatch("error: unable to decode base64 application/octect-stream data")
            }
            return data
        }
        if lower.hasPrefix("text/") || CloudEventEnvelope.isContentType(contentType, "application/xml") {
            guard case .string(let text) = event else { throw mismatch() }
            return Data(text.utf8)
        }
        if CloudEventEnvelope.isContentType(contentType, "application/json")
            || CloudEventEnvelope.isContentType(contentType, "application/cloudevents+json")
        {
            return Data(event.encoded)
        }
        throw mismatch()
    }
}
