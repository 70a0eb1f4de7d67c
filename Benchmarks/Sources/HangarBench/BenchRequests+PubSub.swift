import Foundation
import NIOCore

/// The pub/sub calls of the `publish-*` and `pubsub` scenarios, encoded once up front. Every published event
/// carries, in the first `stampDigits` bytes of its data, the monotonic instant (`NIODeadline` nanoseconds, in
/// decimal) its publish call started: a paced publisher overwrites them as it sends (`stamp(_:at:offset:)`), and
/// the subscriber reads them back from the delivered event, so the bench measures publish → delivery on one clock
/// without a table shared between event loops.
extension BenchRequests {
    static let publishEventPath = "/dapr.proto.runtime.v1.Dapr/PublishEvent"
    static let subscribePath = "/dapr.proto.runtime.v1.Dapr/SubscribeTopicEventsAlpha1"
    /// What hangard calls on a gRPC app to push it an event.
    static let onTopicEventPath = "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"
    /// The data's content type: text, so that Dapr's envelope keeps the data as a string and a subscriber gets its
    /// bytes back unchanged.
    static let eventContentType = "text/plain"
    /// Decimal digits of the stamp at the start of every event's data (a UInt64 has at most 20).
    static let stampDigits = 20

    /// An event's data: the stamp's place (zeros), a space, then `value(bytes:)`'s letters, `bytes` in all (at least
    /// `stampDigits + 1`).
    static func eventData(bytes: Int) -> Data {
        Data(repeating: UInt8(ascii: "0"), count: stampDigits) + Data(" ".utf8)
            + value(bytes: max(0, bytes - stampDigits - 1))
    }

    /// A `PublishEventRequest` of `eventData(bytes:)` on `topic` of component `pubsub`, and the offset of the stamp in
    /// the framed message.
    static func publishEvent(pubsub: String, topic: String, dataBytes: Int) throws -> (
        message: ByteBuffer, stampOffset: Int
    ) {
        var request = Dapr_Proto_Runtime_V1_PublishEventRequest()
        request.pubsubName = pubsub
        request.topic = topic
        request.data = eventData(bytes: dataBytes)
        request.dataContentType = eventContentType
        let message = try frame(request)
        let bytes = Array(message.readableBytesView)
        let data = Array(request.data)
        let starts = 0...(bytes.count - data.count)
        guard let offset = starts.first(where: { bytes[$0..<($0 + data.count)].elementsEqual(data) }) else {
            throw BenchError("the encoded PublishEventRequest does not hold its data")
        }
        return (message, offset)
    }

    /// Writes `instant` as `stampDigits` decimal digits at `offset` of `message` (a copy of a `publishEvent`
    /// message).
    static func stamp(_ message: inout ByteBuffer, at offset: Int, instant: UInt64) {
        var digits = [UInt8](repeating: UInt8(ascii: "0"), count: stampDigits)
        var rest = instant
        var index = stampDigits - 1
        while rest > 0, index >= 0 {
            digits[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
            index -= 1
        }
        message.setBytes(digits, at: message.readerIndex + offset)
    }

    /// The stamp at the start of a delivered event's data; nil when the data does not start with one.
    static func stamp(of data: Data) -> UInt64? {
        guard data.count >= stampDigits else { return nil }
        var value: UInt64 = 0
        for byte in data.prefix(stampDigits) {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) else { return nil }
            value = value &* 10 &+ UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    /// The first message of a streaming subscription: the initial request for `topic` of component `pubsub`.
    static func subscribeInitial(pubsub: String, topic: String) throws -> ByteBuffer {
        var initial = Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestInitialAlpha1()
        initial.pubsubName = pubsub
        initial.topic = topic
        var request = Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestAlpha1()
        request.initialRequest = initial
        return try frame(request)
    }

    /// A streaming subscriber's answer to event `id`: SUCCESS.
    static func eventProcessed(id: String) throws -> ByteBuffer {
        var processed = Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestProcessedAlpha1()
        processed.id = id
        processed.status.status = .success
        var request = Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestAlpha1()
        request.eventProcessed = processed
        return try frame(request)
    }
}
