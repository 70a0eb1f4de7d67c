import Foundation
import HangarComponents
import HangarRuntime
import SwiftProtobuf
import Testing

@testable import HangarGRPC

/// The `TopicEventRequest` a subscriber receives, built from the stored envelope parsed once with `GoJSON` and its
/// `Struct` made directly, against the path it replaced (Foundation's `JSONSerialization` to `[String: Any]`, the
/// extensions written as JSON and read back by SwiftProtobuf's JSON parser, `FoundationEventOracle`): equal on a
/// range of envelopes, and where the old path did not do what Dapr does, Dapr's bytes.
@Suite("TopicEventRequest from a stored envelope")
struct TopicEventRequestTests {
    static let now = Date(timeIntervalSince1970: 1_787_306_400)
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    /// A message as `PubSubAPI.publish` stores it: the envelope the publish path builds.
    static func published(
        _ data: String, contentType: String, metadata: [String: String] = [:]
    ) throws -> PubSubMessage {
        try published(Data(data.utf8), contentType: contentType, metadata: metadata)
    }

    static func published(
        _ data: Data, contentType: String, metadata: [String: String] = [:]
    ) throws -> PubSubMessage {
        let envelope = CloudEventEnvelope(
            source: "orders", topic: "deliveries", pubsubName: "pubsub", dataContentType: contentType, data: data,
            metadata: metadata, traceparent: traceparent, tracestate: "k=v")
        return PubSubMessage(
            data: try envelope.encoded(now: now, timeZone: .gmt, id: { "fixed-id" }),
            contentType: CloudEventEnvelope.contentType, metadata: ["traceparent": traceparent])
    }

    /// A stored envelope written by hand (as a `cloudevents+json` publish may store almost any object).
    static func stored(_ json: String) -> PubSubMessage {
        PubSubMessage(data: Data(json.utf8), contentType: CloudEventEnvelope.contentType)
    }

    static func request(_ message: PubSubMessage, path: String = "/orders") throws
        -> Dapr_Proto_Runtime_V1_TopicEventRequest
    {
        try Dapr_Proto_Runtime_V1_TopicEventRequest(
            SubscriptionEvent.make(message, topic: "deliveries", pubsubName: "pubsub", path: path))
    }

    static let sameAsBefore: [(String, PubSubMessage)] = {
        func make() throws -> [(String, PubSubMessage)] {
            [
                (
                    "nested JSON data",
                    try published(
                        #"{"order":{"id":7,"items":[{"sku":"a","qty":2},{"sku":"b","qty":1.5}],"note":null,"ok":true},"list":[[],{}]}"#,
                        contentType: "application/json")
                ),
                ("JSON with a charset", try published(#"[1,"two",false]"#, contentType: "application/json; charset=utf-8")),
                ("a JSON string", try published(#""just a string""#, contentType: "application/json")),
                ("invalid JSON under application/json", try published("{not json", contentType: "application/json")),
                ("text", try published("hello", contentType: "text/plain")),
                ("unicode text", try published("héllo ☃ 😀 \u{2028} \"quoted\" \\ \t", contentType: "text/plain")),
                ("no content type", try published("plain", contentType: "")),
                ("text/xml", try published("<a x=\"1\">&amp;</a>", contentType: "text/xml")),
                ("application/xml", try published("<a/>", contentType: "application/xml")),
                ("XML with a charset", try published("<a/>", contentType: "application/xml; charset=utf-8")),
                ("TEXT/CSV in capitals", try published("a,b\n1,2", contentType: "TEXT/CSV")),
                ("data_base64", try published(Data([0, 1, 2, 0xFF, 0xFE]), contentType: "application/octet-stream")),
                ("protobuf", try published(Data([8, 150, 1]), contentType: "application/cloudevents+protobuf")),
                ("another type: no data", try published("opaque", contentType: "application/x-thing")),
                (
                    "overrides",
                    try published(
                        "x", contentType: "text/plain",
                        metadata: ["cloudevent.subject": "s", "cloudevent.id": "my-id", "cloudevent.type": "t"])
                ),
                (
                    "extensions of every JSON type",
                    stored(
                        #"""
                        {"specversion":"1.0","id":"e1","source":"s","type":"t","datacontenttype":"text/plain",
                         "data":"d","topic":"old-topic","pubsubname":"p","myext":{"n":[1,2.5,-3e2,"x",null,true,{}]},
                         "count":42,"flag":false,"nothing":null,"big":12345678901234567890123,"tiny":1e-7,
                         "unicode":"é😀\u2028"}
                        """#)
                ),
                (
                    "non-string attributes read as empty",
                    stored(#"{"id":5,"source":null,"type":["t"],"specversion":1.0,"datacontenttype":"text/plain","data":"x"}"#)
                ),
                ("no data at all", stored(#"{"id":"a","datacontenttype":"application/json"}"#)),
                ("null data", stored(#"{"id":"a","datacontenttype":"application/json","data":null}"#)),
                ("an empty object", stored("{}")),
            ]
        }
        return try! make()
    }()

    @Test("the request is the one the Foundation path built", arguments: sameAsBefore)
    func sameAsFoundation(_ name: String, _ message: PubSubMessage) throws {
        let expected = try FoundationEventOracle.request(message, topic: "deliveries", pubsubName: "pubsub", path: "/orders")
        let request = try Self.request(message)
        #expect(request == expected, "\(name)")
        #expect(request.extensions == expected.extensions, "\(name)")
    }

    @Test("a raw payload gets the made-up envelope, as before")
    func rawPayload() throws {
        for (data, contentType) in [(Data([0, 1, 2]), "application/octet-stream"), (Data("text".utf8), "text/plain")] {
            let message = PubSubMessage(
                data: data, contentType: contentType, metadata: ["traceparent": Self.traceparent, "tracestate": "a=b"])
            var request = try Self.request(message)
            let expected = try FoundationEventOracle.request(
                message, topic: "deliveries", pubsubName: "pubsub", path: "/orders")
            #expect(!request.id.isEmpty)
            request.id = expected.id
            #expect(request == expected)
            #expect(request.data == data && request.source == "Dapr")
            #expect(request.extensions.fields["traceparent"]?.stringValue == Self.traceparent)
        }
    }

    @Test("JSON data is written as json.Marshal writes what json.Unmarshal read: float64 numbers, HTML escaped")
    func jsonDataAsGo() throws {
        let message = try Self.published(
            #"""
            {"b": 12345678901234567890123, "a": [1.50, true, null], "c": 9007199254740993, "d": 1e2, "e": 1e-7,
             "f": -0, "g": "<&>\u2028é", "h": 0.000001, "i": 1e21, "j": 123456789012345678, "k": -2.5E-8}
            """#, contentType: "application/json")
        let data = String(decoding: try Self.request(message).data, as: UTF8.self)
        #expect(
            data == #"{"a":[1.5,true,null],"b":1.2345678901234568e+22,"c":9007199254740992,"d":100,"e":1e-7,"f":-0,"#
                + #""g":"\u003c\u0026\u003e\u2028é","h":0.000001,"i":1e+21,"j":123456789012345680,"k":-2.5e-8}"#)
        // The same value as the Foundation path's, which wrote Foundation's numbers and did not escape HTML.
        let old = try FoundationEventOracle.request(message, topic: "deliveries", pubsubName: "pubsub", path: "/")
        let decoded = try JSONSerialization.jsonObject(with: Data(data.utf8)) as? NSDictionary
        let decodedOld = try JSONSerialization.jsonObject(with: old.data) as? NSDictionary
        #expect(decoded?["g"] as? String == decodedOld?["g"] as? String)
        #expect((decoded?["d"] as? NSNumber)?.doubleValue == 100)
    }

    @Test("the data of a cloudevents+json data type is JSON too; a +json vendor type carries none, as in Dapr")
    func jsonTypes() throws {
        let cloudEvents = Self.stored(
            #"{"id":"a","datacontenttype":"application/cloudevents+json","data":{"z":1,"a":"<"}}"#)
        #expect(try Self.request(cloudEvents).data == Data(#"{"a":"\u003c","z":1}"#.utf8))
        // Published under a vendor +json type, the data is stored as a string: Dapr's gRPC delivery has no data for
        // such a type (only text, XML and the two JSON types carry any).
        let vendor = try Self.published(#"{"a":1}"#, contentType: "application/vnd.x+json")
        #expect(try Self.request(vendor).data.isEmpty)
    }

    @Test("data_base64 wins over data unless it is null; a non-string or bad one is refused")
    func base64() throws {
        let both = Self.stored(#"{"id":"a","datacontenttype":"text/plain","data_base64":"AAE=","data":"x"}"#)
        #expect(try Self.request(both).data == Data([0, 1]))
        let null = Self.stored(#"{"id":"a","datacontenttype":"text/plain","data_base64":null,"data":"x"}"#)
        #expect(try Self.request(null).data == Data("x".utf8))
        #expect(throws: (any Error).self) {
            try Self.request(Self.stored(#"{"id":"a","data_base64":"%%%"}"#))
        }
        #expect(throws: (any Error).self) {
            try Self.request(Self.stored(#"{"id":"a","data_base64":12}"#))
        }
    }

    @Test("text data that is not a string, a number past float64 or an envelope that is not an object is refused")
    func refused() throws {
        #expect(throws: (any Error).self) {
            try Self.request(Self.stored(#"{"id":"a","datacontenttype":"text/plain","data":{"a":1}}"#))
        }
        #expect(throws: (any Error).self) {
            try Self.request(Self.stored(#"{"id":"a","datacontenttype":"application/json","data":[1e400]}"#))
        }
        #expect(throws: (any Error).self) { try Self.request(Self.stored(#"{"id":"a","ext":1e999}"#)) }
        #expect(throws: (any Error).self) { try Self.request(Self.stored(#"["not an object"]"#)) }
        #expect(throws: (any Error).self) { try Self.request(Self.stored(#"{"id":"a""#)) }
    }

    @Test("the Struct of any JSON object is the one SwiftProtobuf's JSON parser makes of its text")
    func structOfJSON() throws {
        let texts = [
            #"{}"#,
            #"{"a":null,"b":true,"c":false,"d":"x","e":1,"f":-1.5e300,"g":[],"h":{}}"#,
            #"{"deep":{"l":[[1,[2,[3,{"x":"y"}]]],"é😀\u0000\u001f\"\\"]},"n":0.1,"m":123456789012345678901234567890}"#,
        ]
        for text in texts {
            guard case .object(let object)? = GoJSON.decodePrefix(Data(text.utf8)) else {
                Issue.record("not an object: \(text)")
                continue
            }
            #expect(try Google_Protobuf_Struct(goJSON: object) == Google_Protobuf_Struct(jsonUTF8Data: Data(text.utf8)))
        }
    }
}
