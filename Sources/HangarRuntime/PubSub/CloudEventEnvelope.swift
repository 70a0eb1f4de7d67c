package import Foundation

/// The CloudEvents 1.0 envelope Dapr wraps a published payload in (components-contrib `NewCloudEventsEnvelope`,
/// `FromCloudEvent` and `ApplyMetadata`, as daprd calls them), built byte for byte as Dapr's `json.Marshal` writes
/// it: compact, keys sorted, HTML characters escaped (`GoJSON`).
///
/// A new envelope has `id` (a UUIDv4, or `cloudevent.id`), `source` (the publishing app id, or
/// `cloudevent.source`), `type` (`com.dapr.event.sent`, or `cloudevent.type`), `specversion` 1.0,
/// `datacontenttype` (the request's, verbatim; empty is `text/plain`), the un-prefixed `topic`, `pubsubname`,
/// `traceid` and `traceparent` (the same W3C value, or the `cloudevent.traceparent`/`cloudevent.traceid`
/// override), `tracestate`, `time` (local zone, whole seconds), `subject` when overridden, and `data` (JSON
/// embedded for `application/json`, a string for anything else) or `data_base64` (for `application/octet-stream`
/// and `application/cloudevents+protobuf`). A payload sent as `application/cloudevents+json` is the envelope
/// itself: only `time`, the trace fields, `source`, `type` and `specversion` are filled when missing and `topic`
/// and `pubsubname` overwritten, as Dapr does. `expiration` (UTC) is added for a TTL when the component does not
/// expire messages itself.
package struct CloudEventEnvelope: Sendable {
    /// The content type a stored envelope carries.
    package static let contentType = "application/cloudevents+json"
    /// Dapr's defaults.
    package static let defaultType = "com.dapr.event.sent"
    package static let defaultSource = "Dapr"
    package static let specVersion = "1.0"
    package static let defaultDataContentType = "text/plain"

    /// The publishing app's id: the envelope's `source`.
    package var source: String
    /// The topic as the app named it (without its tenant's prefix).
    package var topic: String
    package var pubsubName: String
    /// The payload's content type as the request gave it (empty: none given).
    package var dataContentType: String
    package var data: Data
    /// The request's metadata: `cloudevent.*` overrides are read from it (keys in any case).
    package var metadata: [String: String]
    /// The W3C `traceparent` of this publish (see `PublishTrace`), and its `tracestate`.
    package var traceparent: String
    package var tracestate: String
    /// The message's TTL when the runtime, not the component, must state its expiry in the envelope (nil when
    /// there is no TTL or the component expires messages itself: Dapr adds `expiration` only then).
    package var envelopeTTL: Duration?

    package init(
        source: String, topic: String, pubsubName: String, dataContentType: String, data: Data,
        metadata: [String: String] = [:], traceparent: String = "", tracestate: String = "",
        envelopeTTL: Duration? = nil
    ) {
        self.source = source
        self.topic = topic
        self.pubsubName = pubsubName
        self.dataContentType = dataContentType
        self.data = data
        self.metadata = metadata
        self.traceparent = traceparent
        self.tracestate = tracestate
        self.envelopeTTL = envelopeTTL
    }

    /// Why an envelope cannot be built: the payload claims to be a CloudEvent but is not a JSON object.
    package struct Invalid: Error, Sendable, CustomStringConvertible {
        package var description: String
    }

    /// The envelope's JSON. `now` is the clock (`time`, `expiration`); `timeZone` the zone of `time` (nil: the
    /// process's own, `TimeZone.current`); `id` makes the default id (nil: a random UUIDv4).
    package func encoded(
        now: Date = Date(), timeZone: TimeZone? = nil, id: (() -> String)? = nil
    ) throws(Invalid) -> Data {
        guard Self.isContentType(dataContentType, "application/cloudevents+json") else {
            // The common case, written straight into bytes (`writeBuilt`).
            var out: [UInt8] = []
            out.reserveCapacity(320 + data.count + data.count / 4 + topic.utf8.count + source.utf8.count)
            writeBuilt(into: &out, now: now, timeZone: timeZone, id: id)
            return Data(out)
        }
        var event = try passedThrough(now: now, timeZone: timeZone)
        if let envelopeTTL {
            event["expiration"] = .string(Self.rfc3339(now.addingTimeInterval(envelopeTTL.timeInterval), in: .gmt))
        }
        return Data(GoJSON.object(event).encoded)
    }

    /// `FromCloudEvent`: the payload is the envelope; the overrides are not applied.
    private func passedThrough(now: Date, timeZone: TimeZone?) throws(Invalid) -> [String: GoJSON] {
        guard case .object(var event) = GoJSON.decodePrefix(data) else {
            throw Invalid(description: "the payload is not a JSON object, as application/cloudevents+json requires")
        }
        if event["time"] == nil {
            var time: [UInt8] = []
            EnvelopeClock.writeRFC3339(now, offset: EnvelopeClock.offset(of: timeZone, at: now), into: &time)
            event["time"] = .string(String(decoding: time, as: UTF8.self))
        }
        if event["traceid"] == nil {
            event["traceid"] = .string(traceparent)
            event["traceparent"] = .string(traceparent)
        }
        if event["tracestate"] == nil { event["tracestate"] = .string(tracestate) }
        event["topic"] = .string(topic)
        event["pubsubname"] = .string(pubsubName)
        // Go's `m[key] == nil` holds for a missing key and for a JSON null alike.
        for (key, fallback) in [("source", Self.defaultSource), ("type", Self.defaultType), ("specversion", "1.0")]
        where event[key] == nil || event[key] == .null {
            event[key] = .string(fallback)
        }
        return event
    }

    /// components-contrib's content-type match: the bare type, case-insensitively, before any `;` parameters.
    /// `expected` is lowercase ASCII. Compared byte by byte: it runs several times on every publish.
    package static func isContentType(_ contentType: String, _ expected: StaticString) -> Bool {
        expected.withUTF8Buffer { expected in
            var index = 0
            for byte in contentType.utf8 {
                if index == expected.count { return byte == UInt8(ascii: ";") }
                let lower = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                guard lower == expected[index] else { return false }
                index += 1
            }
            return index == expected.count
        }
    }

    /// Go's `time.Format(time.RFC3339)`: whole seconds (truncated), `Z` for UTC, else `±hh:mm`.
    package static func rfc3339(_ date: Date, in zone: TimeZone) -> String {
        var text: [UInt8] = []
        EnvelopeClock.writeRFC3339(date, offset: zone.secondsFromGMT(for: date), into: &text)
        return String(decoding: text, as: UTF8.self)
    }
}

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
