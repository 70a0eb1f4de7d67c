package import NIOCore

/// The head of an app's answer to a streamed invocation; its body follows in parts.
package struct AppResponseHead: Sendable {
    /// The HTTP status (200 for a gRPC callee's success).
    package var status: Int
    package var contentType: String
    /// The callee's response headers (lower-case names), without hop-by-hop headers, `content-type` and
    /// `content-length`.
    package var metadata: [(name: String, value: String)]
    /// The body's length when the callee declared it; nil when it is sent until it ends (chunked).
    package var length: Int?

    package init(status: Int, contentType: String, metadata: [(name: String, value: String)], length: Int?) {
        self.status = status
        self.contentType = contentType
        self.metadata = metadata
        self.length = length
    }
}

/// The caller's side of a streamed invocation, which the front-end implements (an HTTP caller's request and
/// response): the request body is pulled from it part by part, no faster than the app takes it, and the answer is
/// handed to it as it comes, no faster than the caller reads it. Every method is called on the call's event loop.
package protocol AppInvocationStream: Sendable {
    /// The request body's length when the caller declared it, nil when it is chunked; 0 when there is none.
    var requestLength: Int? { get }

    /// The next part of the request body, nil after the last. Fails when the caller's request ends early: with an
    /// `APIError` when it is refused (over `maxRequestBytes`), with `AppChannelError.cancelled` when the caller
    /// went away.
    func nextRequestPart() -> EventLoopFuture<ByteBuffer?>

    /// The answer's head; called once, before any part.
    func responseHead(_ head: AppResponseHead)

    /// A part of the answer's body. The future completes when the caller can take more: the app is not read
    /// faster than that.
    func responsePart(_ part: ByteBuffer) -> EventLoopFuture<Void>

    /// Calls `cancel` once if the caller goes away or its request is refused before the answer ends (at once if it
    /// already has): the call into the app is then abandoned.
    func whenCancelled(_ cancel: @escaping @Sendable () -> Void)
}

/// An app channel that can stream an invocation's bodies both ways (an HTTP app's): it reads the request body from
/// the caller's stream as the app takes it and hands the answer back as the app sends it, holding neither whole.
/// Channels that cannot (a gRPC app's `OnInvoke` is one message each way) are called with whole bodies instead.
package protocol StreamingAppChannel: AppChannel {
    /// Invokes a method on the app with `stream`'s body, handing the answer to `stream` (head, then parts). The
    /// future completes on `eventLoop` once the answer's last part has been handed over.
    func invokeStreamed(
        _ invocation: AppInvocation, stream: any AppInvocationStream, deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void>
}
