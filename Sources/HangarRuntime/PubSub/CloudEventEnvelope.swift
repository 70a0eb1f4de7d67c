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

    /// The envelope's JSON. `now` and `timeZone` are the clock (`time`, `expiration`); `id` makes the default id.
    package func encoded(
        now: Date = Date(), timeZone: TimeZone = .current, id: () -> String = { UUID().uuidString.lowercased() }
    ) throws(Invalid) -> Data {
        var event: [String: GoJSON]
        if Self.isContentType(dataContentType, "application/cloudevents+json") {
            event = try passedThrough(now: now, timeZone: timeZone)
        } else {
            event = built(now: now, timeZone: timeZone, id: id)
        }
        if let envelopeTTL {
            event["expiration"] = .string(Self.rfc3339(now.addingTimeInterval(envelopeTTL.timeInterval), in: .gmt))
        }
        return Data(GoJSON.object(event).encoded)
    }

    /// `NewCloudEventsEnvelope` with the `cloudevent.*` overrides applied.
    private func built(now: Date, timeZone: TimeZone, id makeID: () -> String) -> [String: GoJSON] {
        var id = "", source = self.source, type = "", subject = ""
        var traceid = traceparent, tracestate = self.tracestate, traceparentOverride = ""
        // Dapr decodes the overrides with mapstructure's WeakDecode: keys match in any case; a key given with an
        // empty value empties the field, which then takes its default below.
        for (key, value) in metadata where key.utf8.count > 11 && key.lowercased().hasPrefix("cloudevent.") {
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
        let contentType = dataContentType.isEmpty ? Self.defaultDataContentType : dataContentType
        var event: [String: GoJSON] = [
            "id": .string(id.isEmpty ? makeID() : id),
            "specversion": .string(Self.specVersion),
            "datacontenttype": .string(contentType),
            "source": .string(source.isEmpty ? Self.defaultSource : source),
            "type": .string(type.isEmpty ? Self.defaultType : type),
            "topic": .string(topic),
            "pubsubname": .string(pubsubName),
            "traceid": .string(traceid),
            "traceparent": .string(traceid),
            "tracestate": .string(tracestate),
            "time": .string(Self.rfc3339(now, in: timeZone)),
        ]
        if Self.isContentType(contentType, "application/json") {
            // Invalid JSON is embedded as a string, not refused (as Dapr).
            event["data"] = GoJSON.decodePrefix(data) ?? .string(String(decoding: data, as: UTF8.self))
        } else if Self.isContentType(contentType, "application/octet-stream")
            || Self.isContentType(contentType, "application/cloudevents+protobuf")
        {
            event["data_base64"] = .string(data.base64EncodedString())
        } else {
            event["data"] = .string(String(decoding: data, as: UTF8.self))
        }
        if !subject.isEmpty { event["subject"] = .string(subject) }
        return event
    }

    /// `FromCloudEvent`: the payload is the envelope; the overrides are not applied.
    private func passedThrough(now: Date, timeZone: TimeZone) throws(Invalid) -> [String: GoJSON] {
        guard case .object(var event) = GoJSON.decodePrefix(data) else {
            throw Invalid(description: "the payload is not a JSON object, as application/cloudevents+json requires")
        }
        if event["time"] == nil { event["time"] = .string(Self.rfc3339(now, in: timeZone)) }
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
    package static func isContentType(_ contentType: String, _ expected: String) -> Bool {
        let lower = contentType.lowercased()
        if lower == expected { return true }
        guard let semicolon = lower.firstIndex(of: ";") else { return false }
        return lower[..<semicolon] == expected
    }

    /// Go's `time.Format(time.RFC3339)`: whole seconds (truncated), `Z` for UTC, else `±hh:mm`.
    package static func rfc3339(_ date: Date, in zone: TimeZone) -> String {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let offset = zone.secondsFromGMT(for: date)
        let local = seconds + offset
        var days = local / 86_400
        var secondOfDay = local % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        // Howard Hinnant's civil_from_days.
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

extension Duration {
    /// The duration in seconds, as a `TimeInterval`.
    var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}
