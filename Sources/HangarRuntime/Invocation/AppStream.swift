package import NIOCore

/// One streamed gRPC call into an app (gRPC proxying): the caller's messages go to the app as they arrive, and the
/// app's answer comes back as it comes, to the `AppStreamObserver` the stream was opened with. Every shape of call
/// (unary, client-, server- or bidirectional streaming) is such a stream: the path does not say which it is.
///
/// Used on its event loop only. Backpressure both ways: `send` queues the bytes whatever `isWritable` says, and
/// the sender waits for `appStreamWritable()` once it is false; `pause()` stops taking the app's answer, whose
/// bytes then stay unacknowledged in the app's flow-control window, so a slow caller stops the app within a window.
package protocol AppStream: AnyObject {
    /// Whether the app takes request bytes as fast as they are sent (false until the call is open, and while the
    /// bytes sent and not yet written to the app's connection are over a bound).
    var isWritable: Bool { get }
    /// Request bytes: whole length-prefixed gRPC messages, as the caller sent them.
    func send(_ bytes: ByteBuffer)
    /// The caller finished sending.
    func end()
    /// Ends the call (RST_STREAM CANCEL to the app); the observer hears nothing more.
    func cancel()
    /// Holds back the app's answer until `resume()`.
    func pause()
    func resume()
}

/// What hears a streamed call's answer (the front-end that relays it to the caller), on the stream's event loop.
package protocol AppStreamObserver: AnyObject {
    /// The app's response headers (no pseudo-headers).
    func appStream(headers: [(name: String, value: String)])
    /// Response bytes as they arrive: length-prefixed messages, not necessarily whole ones.
    func appStream(data: ByteBuffer)
    /// The stream takes request bytes again after `isWritable` was false.
    func appStreamWritable()
    /// The call is over: the app's trailers (`grpc-status` and the rest, no pseudo-headers), or why it failed
    /// (a runtime error: unreachable, reset, past its deadline).
    func appStream(finished: Result<[(name: String, value: String)], any Error>)
}
