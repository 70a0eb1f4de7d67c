package import Foundation
package import HangarComponents
import NIOCore

/// Stream entry ids as pub/sub sequences. A Redis stream id is `<ms>-<n>`: the server's clock in milliseconds when
/// the entry was added and a counter within that millisecond (`XADD *`). Its sequence is the two packed into 64
/// bits, `ms << 22 | n`: 42 bits of milliseconds (until the year 2109) and 22 of counter (4,194,304 entries in one
/// millisecond). The packing keeps the order of ids (so sequences increase in publish order, and across a
/// server restart that lost the stream, since new ids are later in time), maps back to the id exactly (an ack
/// names the entry), and gives the publish time. Sequences are therefore not consecutive, unlike the embedded
/// components': nothing in `PubSub` promises that they are.
package enum RedisStreamID {
    static let counterBits: UInt64 = 22
    static let counterMask: UInt64 = (1 << counterBits) - 1

    /// The sequence of an id (`1712345678901-3`); nil for text that is not an id, or one outside the packing.
    package static func sequence(_ id: String) -> UInt64? {
        let parts = id.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let ms = UInt64(parts[0]), let n = UInt64(parts[1]) else { return nil }
        guard ms < (1 << (64 - counterBits)), n <= counterMask else { return nil }
        return ms << counterBits | n
    }

    /// The id of a sequence.
    package static func id(_ sequence: UInt64) -> String {
        "\(sequence >> counterBits)-\(sequence & counterMask)"
    }

    /// When the entry of `sequence` was added (the server's clock).
    package static func date(_ sequence: UInt64) -> Date {
        Date(timeIntervalSince1970: Double(sequence >> counterBits) / 1000)
    }
}

/// One stream entry as Hangar and Dapr write it: fields `data` (the bytes) and `metadata` (a JSON object of
/// strings, absent when there is none), Dapr's layout, plus Hangar's own `contentType`, `expiresAt` (Unix
/// milliseconds, for a message with a TTL) and `byteCount` (what it counts in byte accounting), which Dapr's reader
/// ignores. An entry without `contentType` was
/// written by Dapr: it holds a CloudEvent (`application/cloudevents+json`) unless its metadata says
/// `rawPayload: true` or its data is not a JSON object, as Dapr's runtime decides when it delivers it.
package struct RedisStreamEntry: Sendable, Hashable {
    package var sequence: UInt64
    package var message: PubSubMessage
    package var expiresAt: Date?

    package var publishedAt: Date { RedisStreamID.date(sequence) }

    /// The field/value arguments of `XADD` for a message published at about `now`; the last, `byteCount`, is what
    /// the message counts in byte accounting (`PubSubMessage.byteCount`), so that removing the entry subtracts
    /// exactly what its publish added (see `RedisPubSub+Accounting.swift`).
    package static func fields(of message: PubSubMessage, now: Date) -> [RESPArgument] {
        var fields: [RESPArgument] = ["data", .bytes(ByteBuffer(bytes: message.data))]
        if !message.metadata.isEmpty,
            let json = try? JSONSerialization.data(
                withJSONObject: message.metadata, options: [.sortedKeys, .withoutEscapingSlashes])
        {
            fields += ["metadata", .bytes(ByteBuffer(bytes: json))]
        }
        fields += ["contentType", .string(message.contentType)]
        if let ttl = message.ttl {
            let expires = now.addingTimeInterval(
                Double(ttl.components.seconds) + Double(ttl.components.attoseconds) / 1e18)
            fields += ["expiresAt", .string(String(Int64((expires.timeIntervalSince1970 * 1000).rounded(.up))))]
        }
        fields += ["byteCount", .string(String(message.byteCount))]
        return fields
    }

    /// An entry of an `XREADGROUP`/`XCLAIM`/`XRANGE` reply: `[id, [field, value, ...]]`. Nil for an entry that
    /// no longer exists (its fields are null) or a malformed one.
    package init?(_ value: RESPValue) {
        guard let parts = value.elements, parts.count == 2, let id = parts[0].string,
            let sequence = RedisStreamID.sequence(id), let list = parts[1].elements
        else { return nil }
        var fields: [String: ByteBuffer] = [:]
        var index = 0
        while index + 1 < list.count {
            if let name = list[index].string, let value = list[index + 1].bytes { fields[name] = value }
            index += 2
        }
        let data = fields["data"].map { Data($0.readableBytesView) } ?? Data()
        var metadata: [String: String] = [:]
        if let json = fields["metadata"],
            let object = try? JSONSerialization.jsonObject(with: Data(json.readableBytesView)) as? [String: Any]
        {
            for (key, value) in object {
                if let text = value as? String { metadata[key] = text }
            }
        }
        let contentType: String
        if let given = fields["contentType"] {
            contentType = String(buffer: given)
        } else {
            let raw = metadata["rawPayload"]?.lowercased() == "true"
            let object = data.first(where: { !$0.isWhitespace }) == UInt8(ascii: "{")
            contentType = !raw && object ? "application/cloudevents+json" : "application/octet-stream"
        }
        var ttl: Duration?
        if let text = fields["expiresAt"].map({ String(buffer: $0) }), let milliseconds = Int64(text) {
            expiresAt = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
            let publishedMilliseconds = Int64(sequence >> RedisStreamID.counterBits)
            ttl = .milliseconds(max(0, milliseconds - publishedMilliseconds))
        }
        self.sequence = sequence
        message = PubSubMessage(data: data, contentType: contentType, metadata: metadata, ttl: ttl)
    }

    /// The entries of one stream in a reply's `[id, fields]` list, skipping those that no longer exist.
    static func entries(_ value: RESPValue) -> [RedisStreamEntry] {
        (value.elements ?? []).compactMap(RedisStreamEntry.init)
    }

    /// The entries of each stream of an `XREADGROUP` reply (RESP3: a map of stream to entries; RESP2: an array of
    /// `[stream, entries]`); empty for a null reply (the block timed out or was unblocked).
    static func streams(_ reply: RESPValue) -> [String: [RedisStreamEntry]] {
        var result: [String: [RedisStreamEntry]] = [:]
        switch reply {
        case .map(let pairs):
            for pair in pairs {
                if let name = pair.key.string { result[name, default: []] += entries(pair.value) }
            }
        case .array(let streams):
            for stream in streams {
                guard let parts = stream.elements, parts.count == 2, let name = parts[0].string else { continue }
                result[name, default: []] += entries(parts[1])
            }
        default:
            break
        }
        return result
    }
}

extension UInt8 {
    fileprivate var isWhitespace: Bool { self == 0x20 || self == 0x09 || self == 0x0A || self == 0x0D }
}
