import HangarRuntime
import NIOCore

/// gRPC proxying's relay between a caller's call (a `GRPCStreamCall`, whatever the method's shape) and the target
/// app's stream (`InvocationAPI.proxy`), on the call's event loop. Request messages go to the app undecoded, prefix
/// included, as they arrive; the app's response headers, bytes and trailers go back to the caller as they come.
///
/// Backpressure both ways: when the app's stream is full the caller's call is paused (its messages then stay
/// uncredited in its window) until the app's side drains; when the caller's queue is full the app's stream is paused
/// (its bytes stay unacknowledged in the app's window) until the caller reads. Cancellation both ways: the caller's
/// reset, deadline or disconnection cancels the app's stream; the app's failure ends the caller's call with the
/// error (UNAVAILABLE when it vanished) and the app's own status reaches the caller in its trailers.
///
/// The call's callbacks own the relay, which owns the app's stream; finishing or cancelling the call drops them.
final class GRPCProxyRelay: AppStreamObserver {
    private let call: GRPCStreamCall
    private var app: (any AppStream)?

    private init(_ call: GRPCStreamCall) {
        self.call = call
    }

    /// Routes the call under the invocation rules and starts relaying; a refusal ends it at once.
    static func start(_ call: GRPCStreamCall, _ invocation: InvocationAPI) {
        let context = call.context
        let relay = GRPCProxyRelay(call)
        let app: any AppStream
        do {
            // The caller's deadline (the server also enforces it on the caller's side) goes to the app.
            let deadline = context.headers.first(name: "grpc-timeout").flatMap(GRPCConnectionHandler.parseTimeout)
                .map { NIODeadline.now() + $0 }
            app = try invocation.proxy(
                context.caller, path: context.headers.first(name: ":path") ?? "",
                headers: context.headers.map { (name: $0.name, value: $0.value) }, deadline: deadline,
                on: context.eventLoop, observer: relay)
        } catch {
            return call.finish(GRPCStatus(error))
        }
        guard !call.isDone else { return }  // the app's side failed at once
        // Until the app's stream is open, it holds the first message and is not writable: the caller waits.
        relay.app = app
        call.receivesFramed = true
        call.onMessage = { message in
            app.send(message)
            if !app.isWritable { relay.call.pause() }
        }
        call.onEnd = { app.end() }
        call.onCancel = { app.cancel() }
        call.onWritable = { app.resume() }
    }

    func appStream(headers: [(name: String, value: String)]) {
        call.sendHeaders(headers)
    }

    func appStream(data: ByteBuffer) {
        if !call.send(framed: data) { app?.pause() }
    }

    func appStreamWritable() {
        call.resume()
    }

    func appStream(finished result: Result<[(name: String, value: String)], any Error>) {
        switch result {
        case .success(let trailers): call.finish(trailers: trailers)
        case .failure(let error): call.finish(GRPCStatus(error))
        }
        app = nil
    }
}
