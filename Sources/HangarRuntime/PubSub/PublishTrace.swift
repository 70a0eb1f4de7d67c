import Foundation

/// The W3C trace context a publish continues: what the caller sent (`traceparent`/`tracestate`, or gRPC's
/// `grpc-trace-bin`), and the span of this hop that the envelope records (`traceid`, `traceparent`, `tracestate`).
package struct PublishTrace: Sendable, Hashable {
    /// The caller's `traceparent`, if it sent one (valid or not).
    package var incoming: String?
    /// The caller's `tracestate`.
    package var incomingState: String?

    package init(incoming: String? = nil, incomingState: String? = nil) {
        self.incoming = incoming
        self.incomingState = incomingState
    }

    /// This hop's span: the caller's trace with a new span id, or a new trace when the caller sent none or an
    /// invalid one (whose `tracestate` is then dropped), as Dapr's server span.
    package func span() -> (traceparent: String, tracestate: String) {
        let trace = InvocationAPI.traceparent(continuing: incoming, draw: PublishRandom.next)
        return (trace.value, trace.continued ? incomingState ?? "" : "")
    }

    /// A child span of `parent` (a `span()`): the same trace, a new span id. Dapr gives each entry of a bulk
    /// publish its own producer span.
    package static func child(of parent: (traceparent: String, tracestate: String)) -> (
        traceparent: String, tracestate: String
    ) {
        let trace = InvocationAPI.traceparent(continuing: parent.traceparent, draw: PublishRandom.next)
        return (trace.value, parent.tracestate)
    }

    /// The `traceparent` form of a `grpc-trace-bin` header (OpenCensus binary format, base64: version 0, field 0
    /// the 16-byte trace id, field 1 the 8-byte span id, field 2 the options byte); nil when it is not one.
    package static func traceparent(fromGRPCTraceBin value: String) -> String? {
        var text = value
        while text.utf8.count % 4 != 0 { text += "=" }  // gRPC sends -bin headers unpadded
        guard let data = Data(base64Encoded: text), data.count >= 29 else { return nil }
        let bytes = Array(data)
        guard bytes[0] == 0, bytes[1] == 0, bytes[18] == 1, bytes[27] == 2 else { return nil }
        let hex = { (slice: ArraySlice<UInt8>) in slice.map { String(format: "%02x", $0) }.joined() }
        return "00-\(hex(bytes[2..<18]))-\(hex(bytes[19..<27]))-\(hex(bytes[28..<29]))"
    }
}
