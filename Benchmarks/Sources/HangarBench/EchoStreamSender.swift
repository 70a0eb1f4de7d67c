@_spi(Benchmarks) import HangarGRPC
import NIOCore

/// The echo server's side of `/hangar.bench.v1.Echo/Stream`: sends the messages a `StreamRequest` asks for as fast
/// as the client's flow control lets it. It sends while the call takes more (`send` true: the windows are open or
/// the call's queue has room), then waits for `onWritable`; so what it has unsent is bounded by the call's queue,
/// and its pace is the client's. Every message is the same framed `EchoResponse` with the next index written into
/// it (see `BenchRequests.streamedMessage`). Runs on the call's event loop; the call's callbacks own it until the
/// call is over.
final class EchoStreamSender {
    /// The largest payload a client may ask for per message.
    static let maxPayloadBytes = 1 << 20

    private let call: GRPCStreamCall
    /// Messages to send; nil: until the client cancels.
    private let count: UInt64?
    private let template: ByteBuffer
    /// Where the index goes in `template`.
    private let indexOffset: Int
    private var next: UInt64 = 0

    private init(call: GRPCStreamCall, count: UInt64?, template: ByteBuffer, payloadBytes: Int) {
        self.call = call
        self.count = count
        self.template = template
        self.indexOffset = template.readableBytes - payloadBytes
    }

    /// Answers `request` on `call`: INVALID_ARGUMENT for a payload size outside 8 bytes … 1 MiB, else the stream.
    static func start(_ request: Hangar_Bench_V1_StreamRequest, _ call: GRPCStreamCall) {
        let payloadBytes = Int(request.payloadBytes)
        guard (8...maxPayloadBytes).contains(payloadBytes),
            let template = try? BenchRequests.streamedMessage(payloadBytes: payloadBytes)
        else {
            return call.finish(trailers: [
                ("grpc-status", "3"), ("grpc-message", "payload_bytes must be between 8 and \(maxPayloadBytes)"),
            ])
        }
        let sender = EchoStreamSender(
            call: call, count: request.count == 0 ? nil : request.count, template: template, payloadBytes: payloadBytes)
        call.onWritable = { sender.send() }
        sender.send()
    }

    /// Sends until the call is full, over, or every message is out (then OK trailers follow).
    private func send() {
        while !call.isDone {
            if let count, next == count {
                return call.finish(trailers: [("grpc-status", "0")])
            }
            var message = template
            message.setInteger(next, at: message.readerIndex + indexOffset)
            next += 1
            guard call.send(framed: message) else { return }
        }
    }
}
