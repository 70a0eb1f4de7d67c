import Foundation
import Testing

@testable import HangarRuntime

/// The envelope written straight into bytes (`CloudEventEnvelope.writeBuilt`, `EnvelopeClock`, `PublishRandom`)
/// against the encoder it replaced: the envelope as a `[String: GoJSON]` dictionary written by `GoJSON` (keys
/// sorted), kept here as `ReferenceEnvelope`. Both must write the same bytes for every input.
@Suite("CloudEvent envelope writer")
struct CloudEventEnvelopeWriterTests {
    static let now = Date(timeIntervalSince1970: 1_787_306_400.75)
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    static let contentTypes = [
        "", "text/plain", "TEXT/PLAIN; charset=utf-8", "application/json", "Application/JSON;charset=utf-8",
        "application/json ;x", "application/jsonx", "application/octet-stream", "APPLICATION/OCTET-STREAM; a=b",
        "application/cloudevents+protobuf", "application/xml", "application/vnd.x+json", "application/cloudevents",
        "image/png", ";", "application/json;", "\u{212A}", "a\"b<c>",
    ]

    static let payloads: [[UInt8]] = [
        [], Array("hello".utf8), Array("<a&b> \"quoted\" \\ /".utf8), Array("\u{0}\u{1}\u{1f}\t\r\n\u{8}\u{c}".utf8),
        Array("é😀 \u{2028}\u{2029}\u{2027}".utf8), [0xFF, 0xFE, 0x41, 0xE2, 0x80], [0xE2, 0x80, 0xA8, 0xE2],
        Array(#"{"b": 12345678901234567890123, "a": [1.50, true, null, "x<y"]}"#.utf8), Array("  [1, 2] tail".utf8),
        Array("{nope".utf8), Array(#""just a string""#.utf8), Array("-0.5e+10".utf8),
        Array(String(repeating: "0123456789", count: 100).utf8), (0...255).map { UInt8($0) },
    ]

    static let metadatas: [[String: String]] = [
        [:],
        ["other": "kept out", "cloudevent": "x", "cloudevent.": "y"],
        [
            "cloudevent.id": "my-id", "CloudEvent.Source": "elsewhere", "cloudevent.type": "order.created",
            "cloudevent.subject": "o-1", "cloudevent.traceid": "ignored", "cloudevent.traceparent": "tp",
            "cloudevent.tracestate": "s=1",
        ],
        ["cloudevent.source": "", "cloudevent.id": "", "cloudevent.traceid": "t-1", "CLOUDEVENT.TYPE": ""],
        ["cloudevent.subject": "<&>\u{2028}", "cloudevent.id": "é\"", "cloudevent.traceparent": ""],
        ["cloudevent.unknown": "x", "ttl": "10s"],
    ]

    static let zones: [TimeZone?] = [
        nil, .gmt, TimeZone(secondsFromGMT: 2 * 3600 + 30 * 60), TimeZone(secondsFromGMT: -5 * 3600),
        TimeZone(secondsFromGMT: 14 * 3600), TimeZone(identifier: "America/St_Johns"),
    ]

    static let dates = [
        now, Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: -1.5),
        Date(timeIntervalSince1970: -62_135_596_800), Date(timeIntervalSince1970: -70_000_000_000),
        Date(timeIntervalSince1970: 253_402_300_799.9), Date(timeIntervalSince1970: 951_782_400),
        Date(timeIntervalSince1970: 1_709_164_800 + 86_399),
    ]

    /// Every combination of content type, payload, metadata and zone, with and without a TTL, an id maker, odd
    /// names and trace fields, writes what the dictionary-based encoder wrote.
    @Test("writes the same bytes as the dictionary encoder", arguments: contentTypes)
    func sameBytes(_ contentType: String) throws {
        for (index, payload) in Self.payloads.enumerated() {
            for metadata in Self.metadatas {
                for zone in Self.zones {
                    let odd = index % 3 == 0
                    let envelope = CloudEventEnvelope(
                        source: odd ? "" : "orders", topic: odd ? "a/b<c>é" : "deliveries",
                        pubsubName: odd ? "pub\"sub" : "pubsub", dataContentType: contentType, data: Data(payload),
                        metadata: metadata, traceparent: odd ? "" : Self.traceparent,
                        tracestate: odd ? "" : "k=v", envelopeTTL: index % 2 == 0 ? .seconds(90) : nil)
                    let written = try envelope.encoded(now: Self.now, timeZone: zone, id: { "fixed-id" })
                    let reference = try ReferenceEnvelope.encoded(
                        envelope, now: Self.now, timeZone: zone ?? .current, id: { "fixed-id" })
                    #expect(
                        written == reference,
                        "\(contentType) \(payload.prefix(20)) \(metadata) \(String(describing: zone))")
                }
            }
        }
    }

    @Test(
        "a CloudEvent passed through is written as before, with its fill-ins",
        arguments: [
            #"{"id":"ce-1","source":"s","type":"t","specversion":"1.0","topic":"x","pubsubname":"y","traceid":"m"}"#,
            #"{"data":"x","source":null,"type":null,"time":"2020-01-01T00:00:00Z"}"#, #"{}"#,
            #"{"data":{"z":1,"a":[1.0,"<"]},"datacontenttype":"application/json","tracestate":"a=b"}"#,
        ])
    func passedThrough(_ payload: String) throws {
        for contentType in ["application/cloudevents+json", "Application/CloudEvents+JSON; charset=utf-8"] {
            for ttl in [nil, Duration.seconds(5)] {
                for metadata in Self.metadatas {
                    let envelope = CloudEventEnvelope(
                        source: "orders", topic: "deliveries", pubsubName: "pubsub", dataContentType: contentType,
                        data: Data(payload.utf8), metadata: metadata, traceparent: Self.traceparent,
                        tracestate: "k=v", envelopeTTL: ttl)
                    for zone in Self.zones {
                        let written = try envelope.encoded(now: Self.now, timeZone: zone)
                        let reference = try ReferenceEnvelope.encoded(
                            envelope, now: Self.now, timeZone: zone ?? .current, id: { "unused" })
                        #expect(written == reference, "\(contentType) \(payload) \(metadata)")
                    }
                }
            }
        }
    }

    @Test("times are written as Go's RFC 3339, at any date and offset")
    func times() throws {
        for date in Self.dates {
            for zone in Self.zones {
                let zone = zone ?? .current
                #expect(
                    CloudEventEnvelope.rfc3339(date, in: zone) == ReferenceEnvelope.rfc3339(date, in: zone),
                    "\(date) \(zone)")
            }
        }
    }

    @Test("the current zone's offset comes from the per-second cache as Foundation gives it")
    func cachedOffset() {
        for date in Self.dates + [Date(), Date().addingTimeInterval(1), Date()] {
            #expect(EnvelopeClock.offset(of: nil, at: date) == TimeZone.current.secondsFromGMT(for: date))
        }
        let zone = TimeZone(secondsFromGMT: 3600)!
        #expect(EnvelopeClock.offset(of: zone, at: Self.now) == 3600)
    }

    @Test("generated ids are distinct lowercase UUIDv4 of the RFC 9562 variant")
    func generatedIDs() {
        var seen: Set<String> = []
        for _ in 0..<5000 {  // more than one refill of the random pool
            var bytes: [UInt8] = []
            PublishRandom.writeUUIDv4(into: &bytes)
            let id = String(decoding: bytes, as: UTF8.self)
            #expect(UUID(uuidString: id) != nil)
            #expect(id == id.lowercased())
            let characters = Array(id)
            #expect(characters[14] == "4")
            #expect("89ab".contains(characters[19]))
            seen.insert(id)
        }
        #expect(seen.count == 5000)
    }

    @Test("publish spans come from the pooled generator: new trace ids, or the caller's trace continued")
    func spans() {
        let fresh = PublishTrace().span()
        #expect(fresh.traceparent.utf8.count == 55)
        #expect(fresh.traceparent.hasPrefix("00-") && fresh.traceparent.hasSuffix("-01"))
        #expect(fresh.traceparent != PublishTrace().span().traceparent)
        let continued = PublishTrace(incoming: Self.traceparent, incomingState: "a=1").span()
        #expect(continued.traceparent.hasPrefix("00-0af7651916cd43dd8448eb211c80319c-"))
        #expect(!continued.traceparent.contains("b7ad6b7169203331"))
        #expect(continued.tracestate == "a=1")
        let child = PublishTrace.child(of: continued)
        #expect(child.traceparent.hasPrefix("00-0af7651916cd43dd8448eb211c80319c-"))
        #expect(child.traceparent != continued.traceparent)
    }
}

/// The envelope encoder as it was before `writeBuilt`: the members in a `[String: GoJSON]` dictionary, written by
/// `GoJSON` (which sorts the keys), the time through `String` interpolation.
enum ReferenceEnvelope {
    static func encoded(
        _ envelope: CloudEventEnvelope, now: Date, timeZone: TimeZone, id: () -> String
    ) throws -> Data {
        var event: [String: GoJSON]
        if isContentType(envelope.dataContentType, "application/cloudevents+json") {
            event = try passedThrough(envelope, now: now, timeZone: timeZone)
        } else {
            event = built(envelope, now: now, timeZone: timeZone, id: id)
        }
        if let ttl = envelope.envelopeTTL {
            event["expiration"] = .string(rfc3339(now.addingTimeInterval(ttl.timeInterval), in: .gmt))
        }
        return Data(GoJSON.object(event).encoded)
    }

    static func built(
        _ envelope: CloudEventEnvelope, now: Date, timeZone: TimeZone, id makeID: () -> String
    ) -> [String: GoJSON] {
        var id = "", source = envelope.source, type = "", subject = ""
        var traceid = envelope.traceparent, tracestate = envelope.tracestate, traceparentOverride = ""
        for (key, value) in envelope.metadata where key.utf8.count > 11 && key.lowercased().hasPrefix("cloudevent.") {
            switch key.lowercased() {
            case "cloudevent.id": id = value
            case "cloudevent.source": source = value
            case "cloudevent.type": type = value
            case "cloudevent.subject": subject = value
            case "cloudevent.traceid": traceid = value
            case "cloudevent.tracestate": tracestate = value
            case "cloudevent.traceparent": traceparentOverride = value
            default: break
            }
        }
        if !traceparentOverride.isEmpty { traceid = traceparentOverride }
        let contentType = envelope.dataContentType.isEmpty ? "text/plain" : envelope.dataContentType
        var event: [String: GoJSON] = [
            "id": .string(id.isEmpty ? makeID() : id),
            "specversion": .string("1.0"),
            "datacontenttype": .string(contentType),
            "source": .string(source.isEmpty ? "Dapr" : source),
            "type": .string(type.isEmpty ? "com.dapr.event.sent" : type),
            "topic": .string(envelope.topic),
            "pubsubname": .string(envelope.pubsubName),
            "traceid": .string(traceid),
            "traceparent": .string(traceid),
            "tracestate": .string(tracestate),
            "time": .string(rfc3339(now, in: timeZone)),
        ]
        let data = envelope.data
        if isContentType(contentType, "application/json") {
            event["data"] = GoJSON.decodePrefix(data) ?? .string(String(decoding: data, as: UTF8.self))
        } else if isContentType(contentType, "application/octet-stream")
            || isContentType(contentType, "application/cloudevents+protobuf")
        {
            event["data_base64"] = .string(data.base64EncodedString())
        } else {
            event["data"] = .string(String(decoding: data, as: UTF8.self))
        }
        if !subject.isEmpty { event["subject"] = .string(subject) }
        return event
    }

    static func passedThrough(
        _ envelope: CloudEventEnvelope, now: Date, timeZone: TimeZone
    ) throws -> [String: GoJSON] {
        guard case .object(var event) = GoJSON.decodePrefix(envelope.data) else {
            throw CloudEventEnvelope.Invalid(description: "not an object")
        }
        if event["time"] == nil { event["time"] = .string(rfc3339(now, in: timeZone)) }
        if event["traceid"] == nil {
            event["traceid"] = .string(envelope.traceparent)
            event["traceparent"] = .string(envelope.traceparent)
        }
        if event["tracestate"] == nil { event["tracestate"] = .string(envelope.tracestate) }
        event["topic"] = .string(envelope.topic)
        event["pubsubname"] = .string(envelope.pubsubName)
        for (key, fallback) in [("source", "Dapr"), ("type", "com.dapr.event.sent"), ("specversion", "1.0")]
        where event[key] == nil || event[key] == .null {
            event[key] = .string(fallback)
        }
        return event
    }

    static func isContentType(_ contentType: String, _ expected: String) -> Bool {
        let lower = contentType.lowercased()
        if lower == expected { return true }
        guard let semicolon = lower.firstIndex(of: ";") else { return false }
        return lower[..<semicolon] == expected
    }

    static func rfc3339(_ date: Date, in zone: TimeZone) -> String {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let offset = zone.secondsFromGMT(for: date)
        let local = seconds + offset
        var days = local / 86_400
        var secondOfDay = local % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        var text =
            "\(year)-\(two(month))-\(two(day))T\(two(secondOfDay / 3600)):\(two(secondOfDay / 60 % 60)):"
            + two(secondOfDay % 60)
        if offset == 0 {
            text += "Z"
        } else {
            let minutes = abs(offset) / 60
            text += (offset < 0 ? "-" : "+") + two(minutes / 60) + ":" + two(minutes % 60)
        }
        return text
    }
}
