import Foundation
import Synchronization

/// The new envelope (`NewCloudEventsEnvelope` with the overrides) written straight into bytes: its members are
/// known, so they are written in the order `json.Marshal` sorts them, with no dictionary of `GoJSON` values, no
/// key sort, and the time, id and strings written in place. This runs on every publish; the bytes are the ones
/// `GoJSON.object(...).encoded` would write for the same members (a test compares the two over many inputs).
extension CloudEventEnvelope {
    /// The members that differ from envelope to envelope, after the `cloudevent.*` overrides.
    struct Fields {
        var id: String?
        var source: String
        var type: String
        var subject: String
        var traceid: String
        var tracestate: String
    }

    /// The `cloudevent.*` overrides applied to this publish's own values. Dapr decodes them with mapstructure's
    /// WeakDecode: keys match in any case; a key given with an empty value empties the field, which then takes its
    /// default.
    func fields() -> Fields {
        var id = "", source = self.source, type = "", subject = ""
        var traceid = traceparent, tracestate = self.tracestate, traceparentOverride = ""
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
        return Fields(
            id: id.isEmpty ? nil : id, source: source.isEmpty ? Self.defaultSource : source,
            type: type.isEmpty ? Self.defaultType : type, subject: subject, traceid: traceid, tracestate: tracestate)
    }

    /// Writes the new envelope. Members in Go's byte-wise key order: `data`/`data_base64`, `datacontenttype`,
    /// `expiration`, `id`, `pubsubname`, `source`, `specversion`, `subject`, `time`, `topic`, `traceid`,
    /// `traceparent`, `tracestate`, `type`.
    func writeBuilt(
        into out: inout [UInt8], now: Date, timeZone: TimeZone?, id makeID: (() -> String)?
    ) {
        let fields = fields()
        let contentType = dataContentType.isEmpty ? Self.defaultDataContentType : dataContentType
        if Self.isContentType(contentType, "application/json") {
            // Invalid JSON is embedded as a string, not refused (as Dapr).
            out.append(literal: #"{"data":"#)
            if let value = GoJSON.decodePrefix(data) {
                value.encode(into: &out)
            } else {
                GoJSON.encodeString(String(decoding: data, as: UTF8.self), into: &out)
            }
        } else if Self.isContentType(contentType, "application/octet-stream")
            || Self.isContentType(contentType, "application/cloudevents+protobuf")
        {
            out.append(literal: #"{"data_base64":""#)
            out.append(contentsOf: data.base64EncodedData())  // base64 needs no escape
            out.append(UInt8(ascii: "\""))
        } else {
            out.append(literal: #"{"data":"#)
            GoJSON.encodeString(String(decoding: data, as: UTF8.self), into: &out)
        }
        out.append(literal: #","datacontenttype":"#)
        GoJSON.encodeString(contentType, into: &out)
        if let envelopeTTL {
            out.append(literal: #","expiration":""#)
            EnvelopeClock.writeRFC3339(now.addingTimeInterval(envelopeTTL.timeInterval), offset: 0, into: &out)
            out.append(UInt8(ascii: "\""))
        }
        out.append(literal: #","id":"#)
        if let id = fields.id {
            GoJSON.encodeString(id, into: &out)
        } else if let makeID {
            GoJSON.encodeString(makeID(), into: &out)
        } else {
            out.append(UInt8(ascii: "\""))
            PublishRandom.writeUUIDv4(into: &out)
            out.append(UInt8(ascii: "\""))
        }
        out.append(literal: #","pubsubname":"#)
        GoJSON.encodeString(pubsubName, into: &out)
        out.append(literal: #","source":"#)
        GoJSON.encodeString(fields.source, into: &out)
        out.append(literal: #","specversion":"1.0""#)
        if !fields.subject.isEmpty {
            out.append(literal: #","subject":"#)
            GoJSON.encodeString(fields.subject, into: &out)
        }
        out.append(literal: #","time":""#)
        EnvelopeClock.writeRFC3339(now, offset: EnvelopeClock.offset(of: timeZone, at: now), into: &out)
        out.append(literal: #"","topic":"#)
        GoJSON.encodeString(topic, into: &out)
        out.append(literal: #","traceid":"#)
        GoJSON.encodeString(fields.traceid, into: &out)
        out.append(literal: #","traceparent":"#)
        GoJSON.encodeString(fields.traceid, into: &out)
        out.append(literal: #","tracestate":"#)
        GoJSON.encodeString(fields.tracestate, into: &out)
        out.append(literal: #","type":"#)
        GoJSON.encodeString(fields.type, into: &out)
        out.append(UInt8(ascii: "}"))
    }
}

extension [UInt8] {
    /// Appends a literal's UTF-8 bytes (no `String` made).
    mutating func append(literal: StaticString) {
        literal.withUTF8Buffer { append(contentsOf: $0) }
    }
}
