import Foundation
import Testing

@testable import HangarRuntime

/// The envelope Dapr builds, field by field, and the JSON it is written in (Go's `json.Marshal`).
@Suite("CloudEvent envelope")
struct CloudEventEnvelopeTests {
    /// 2026-08-21T10:00:00Z, plus a fraction that `time` truncates.
    static let now = Date(timeIntervalSince1970: 1_787_306_400.75)
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    static func envelope(
        contentType: String = "", data: String = "hello", metadata: [String: String] = [:], ttl: Duration? = nil
    ) -> CloudEventEnvelope {
        CloudEventEnvelope(
            source: "orders", topic: "deliveries", pubsubName: "pubsub", dataContentType: contentType,
            data: Data(data.utf8), metadata: metadata, traceparent: traceparent, tracestate: "k=v", envelopeTTL: ttl)
    }

    static func json(_ envelope: CloudEventEnvelope, zone: TimeZone = .gmt) throws -> [String: Any] {
        let data = try envelope.encoded(now: now, timeZone: zone, id: { "fixed-id" })
        return try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test("every field of a new envelope, with Dapr's defaults")
    func everyField() throws {
        let event = try Self.json(Self.envelope())
        #expect(event["id"] as? String == "fixed-id")
        #expect(event["source"] as? String == "orders")
        #expect(event["type"] as? String == "com.dapr.event.sent")
        #expect(event["specversion"] as? String == "1.0")
        #expect(event["datacontenttype"] as? String == "text/plain")
        #expect(event["topic"] as? String == "deliveries")
        #expect(event["pubsubname"] as? String == "pubsub")
        #expect(event["traceid"] as? String == Self.traceparent)
        #expect(event["traceparent"] as? String == Self.traceparent)
        #expect(event["tracestate"] as? String == "k=v")
        #expect(event["time"] as? String == "2026-08-21T10:00:00Z")
        #expect(event["data"] as? String == "hello")
        #expect(event["subject"] == nil)
        #expect(event["expiration"] == nil)
        #expect(event["data_base64"] == nil)
        #expect(event.count == 12)
    }

    @Test("the JSON is Go's: compact, keys sorted, HTML characters escaped")
    func goJSON() throws {
        let data = try Self.envelope(data: "<a&b>").encoded(now: Self.now, timeZone: .gmt, id: { "x" })
        let text = String(decoding: data, as: UTF8.self)
        #expect(
            text == #"{"data":"\u003ca\u0026b\u003e","datacontenttype":"text/plain","id":"x","pubsubname":"pubsub","#
                + #""source":"orders","specversion":"1.0","time":"2026-08-21T10:00:00Z","topic":"deliveries","#
                + #""traceid":"\#(Self.traceparent)","traceparent":"\#(Self.traceparent)","tracestate":"k=v","#
                + #""type":"com.dapr.event.sent"}"#)
    }

    @Test("a generated id is a lowercase UUIDv4, new for each envelope")
    func generatedID() throws {
        let first = try JSONSerialization.jsonObject(with: Self.envelope().encoded()) as? [String: Any]
        let second = try JSONSerialization.jsonObject(with: Self.envelope().encoded()) as? [String: Any]
        let id = try #require(first?["id"] as? String)
        #expect(UUID(uuidString: id) != nil)
        #expect(id == id.lowercased())
        #expect(Array(id)[14] == "4")
        #expect(id != second?["id"] as? String)
    }

    @Test("time is local, whole seconds, with the zone's offset")
    func localTime() throws {
        let zone = try #require(TimeZone(secondsFromGMT: 2 * 3600 + 30 * 60))
        #expect(try Self.json(Self.envelope(), zone: zone)["time"] as? String == "2026-08-21T12:30:00+02:30")
        let west = try #require(TimeZone(secondsFromGMT: -5 * 3600))
        #expect(try Self.json(Self.envelope(), zone: west)["time"] as? String == "2026-08-21T05:00:00-05:00")
    }

    @Test(
        "datacontenttype is kept verbatim, parameters included", arguments: ["text/plain; charset=utf-8", "TEXT/csv"])
    func contentTypeVerbatim(_ contentType: String) throws {
        #expect(try Self.json(Self.envelope(contentType: contentType))["datacontenttype"] as? String == contentType)
    }

    @Test("JSON data is embedded as a value, numbers keep their literal")
    func jsonData() throws {
        let envelope = Self.envelope(
            contentType: "application/json; charset=utf-8",
            data: #"{"b": 12345678901234567890123, "a": [1.50, true, null]}"#)
        let text = String(decoding: try envelope.encoded(now: Self.now), as: UTF8.self)
        #expect(text.hasPrefix(#"{"data":{"a":[1.50,true,null],"b":12345678901234567890123},"#))
    }

    @Test("invalid JSON under application/json becomes a string; a +json type is not JSON")
    func invalidJSONIsAString() throws {
        #expect(
            try Self.json(Self.envelope(contentType: "application/json", data: "{nope"))["data"] as? String == "{nope")
        let vendor = try Self.json(Self.envelope(contentType: "application/vnd.x+json", data: #"{"a":1}"#))
        #expect(vendor["data"] as? String == #"{"a":1}"#)
    }

    @Test("binary data is data_base64", arguments: ["application/octet-stream", "application/cloudevents+protobuf"])
    func binaryData(_ contentType: String) throws {
        let event = try Self.json(Self.envelope(contentType: contentType, data: "\u{1}\u{2}binary"))
        #expect(event["data_base64"] as? String == Data("\u{1}\u{2}binary".utf8).base64EncodedString())
        #expect(event["data"] == nil)
    }

    @Test("cloudevent.* overrides, keys in any case; traceparent wins over traceid")
    func overrides() throws {
        let event = try Self.json(
            Self.envelope(metadata: [
                "cloudevent.id": "my-id", "CloudEvent.Source": "elsewhere", "cloudevent.type": "order.created",
                "cloudevent.subject": "o-1", "cloudevent.traceid": "ignored", "cloudevent.traceparent": "tp",
                "cloudevent.tracestate": "s=1", "other": "kept out",
            ]))
        #expect(event["id"] as? String == "my-id")
        #expect(event["source"] as? String == "elsewhere")
        #expect(event["type"] as? String == "order.created")
        #expect(event["subject"] as? String == "o-1")
        #expect(event["traceid"] as? String == "tp")
        #expect(event["traceparent"] as? String == "tp")
        #expect(event["tracestate"] as? String == "s=1")
        #expect(event["other"] == nil)
    }

    @Test("an empty override takes the default; traceid alone sets both trace fields")
    func emptyOverrides() throws {
        let event = try Self.json(
            Self.envelope(metadata: ["cloudevent.source": "", "cloudevent.id": "", "cloudevent.traceid": "t-1"]))
        #expect(event["source"] as? String == "Dapr")
        #expect(event["id"] as? String == "fixed-id")
        #expect(event["traceid"] as? String == "t-1")
        #expect(event["traceparent"] as? String == "t-1")
    }

    @Test("a TTL the runtime states: expiration in UTC")
    func expiration() throws {
        let zone = try #require(TimeZone(secondsFromGMT: 3600))
        let event = try Self.json(Self.envelope(ttl: .seconds(90)), zone: zone)
        #expect(event["expiration"] as? String == "2026-08-21T10:01:30Z")
        #expect(event["time"] as? String == "2026-08-21T11:00:00+01:00")
    }

    @Test("a CloudEvent passes through: only missing fields are filled, topic and pubsubname overwritten")
    func passThrough() throws {
        let original =
            #"{"id":"ce-1","source":"s","type":"t","specversion":"1.0","topic":"x","pubsubname":"y","#
            + #""traceid":"mine","time":"2020-01-01T00:00:00Z","data":{"n":1},"datacontenttype":"application/json"}"#
        let event = try Self.json(
            Self.envelope(
                contentType: "application/cloudevents+json; charset=utf-8", data: original,
                metadata: ["cloudevent.id": "ignored", "cloudevent.source": "ignored"]))
        #expect(event["id"] as? String == "ce-1")
        #expect(event["source"] as? String == "s")
        #expect(event["type"] as? String == "t")
        #expect(event["topic"] as? String == "deliveries")
        #expect(event["pubsubname"] as? String == "pubsub")
        #expect(event["traceid"] as? String == "mine")
        #expect(event["traceparent"] == nil)
        #expect(event["tracestate"] as? String == "k=v")
        #expect(event["time"] as? String == "2020-01-01T00:00:00Z")
        #expect((event["data"] as? [String: Any])?["n"] as? Int == 1)
    }

    @Test("a bare CloudEvent gets Dapr's fill-ins: source Dapr, no id, the span's trace, the time")
    func passThroughDefaults() throws {
        let event = try Self.json(
            Self.envelope(
                contentType: "application/cloudevents+json", data: #"{"data":"x","source":null}"#, ttl: .seconds(1)))
        #expect(event["source"] as? String == "Dapr")
        #expect(event["type"] as? String == "com.dapr.event.sent")
        #expect(event["specversion"] as? String == "1.0")
        #expect(event["id"] == nil)
        #expect(event["datacontenttype"] == nil)
        #expect(event["traceid"] as? String == Self.traceparent)
        #expect(event["traceparent"] as? String == Self.traceparent)
        #expect(event["time"] as? String == "2026-08-21T10:00:00Z")
        #expect(event["expiration"] as? String == "2026-08-21T10:00:01Z")
    }

    @Test(
        "a payload that claims to be a CloudEvent but is no JSON object is refused",
        arguments: ["nope", "[1]", "null", ""])
    func invalidCloudEvent(_ payload: String) {
        #expect(throws: CloudEventEnvelope.Invalid.self) {
            try Self.envelope(contentType: "application/cloudevents+json", data: payload).encoded()
        }
    }

    @Test("Go's decoder: a value followed by anything decodes; strings and escapes round-trip as Go writes them")
    func goDecoder() throws {
        #expect(GoJSON.decodePrefix(Array(#"  {"a":1} trailing"#.utf8)) == .object(["a": .number("1")]))
        #expect(GoJSON.decodePrefix(Array("123abc".utf8)) == .number("123"))
        #expect(GoJSON.decodePrefix(Array("tru".utf8)) == nil)
        #expect(GoJSON.decodePrefix(Array(#"{"a":01}"#.utf8)) == nil)
        let decoded = try #require(GoJSON.decodePrefix(Array(#""\u00e9\ud83d\ude00\n\u2028\/""#.utf8)))
        #expect(String(decoding: decoded.encoded, as: UTF8.self) == "\"é😀\\n\\u2028/\"")
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        #expect(GoJSON.decodePrefix(Array(deep.utf8)) == nil)
    }

    @Test("strings are escaped as Go's encoder escapes them, plain runs copied as they are")
    func goStringEscapes() {
        let text = "a\u{0}\u{1f}\"\\\t\r\n\u{8}\u{c}<>&\u{2028}\u{2029}é😀 \u{2027}/end"
        let expected = #""a\u0000\u001f\"\\\t\r\n\b\f\u003c\u003e\u0026\u2028\u2029é😀 \#u{2027}/end""#
        #expect(String(decoding: GoJSON.string(text).encoded, as: UTF8.self) == expected)
        #expect(String(decoding: GoJSON.string("").encoded, as: UTF8.self) == #""""#)
        #expect(String(decoding: GoJSON.string("\u{e2}x").encoded, as: UTF8.self) == "\"\u{e2}x\"")
    }
}
