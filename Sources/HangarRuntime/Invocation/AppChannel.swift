package import NIOCore

/// A call into an app over its app channel, in the runtime's terms: both front-ends build it, each kind of app
/// channel (gRPC `AppCallback.OnInvoke`, HTTP) encodes it.
package struct AppInvocation: Sendable {
    /// The method, without a leading slash (`orders/1`).
    package var method: String
    package var data: ByteBuffer
    /// The `google.protobuf.Any` type URL of `data` when a gRPC caller sent a packed message; empty for raw bytes.
    package var dataTypeURL: String
    package var contentType: String
    /// The HTTP verb (`GET`, `POST`, ...) when the call carries one (HTTP callers always; gRPC callers through
    /// `http_extension`).
    package var verb: String?
    /// The raw query string, without `?`.
    package var query: String
    /// What the callee receives as headers or metadata, already filtered (no token, no hop-by-hop headers) and
    /// with Dapr's caller and callee headers added.
    package var metadata: [(name: String, value: String)]

    package init(
        method: String, data: ByteBuffer, dataTypeURL: String = "", contentType: String, verb: String? = nil,
        query: String = "", metadata: [(name: String, value: String)] = []
    ) {
        self.method = method
        self.data = data
        self.dataTypeURL = dataTypeURL
        self.contentType = contentType
        self.verb = verb
        self.query = query
        self.metadata = metadata
    }
}

/// What the callee answered.
package struct AppInvocationResult: Sendable {
    package var data: ByteBuffer
    package var dataTypeURL: String
    package var contentType: String
    /// The callee's response headers (gRPC: its initial metadata).
    package var metadata: [(name: String, value: String)]
    /// The status an HTTP callee answered with; nil for a gRPC callee.
    package var httpStatus: Int?

    package init(
        data: ByteBuffer, dataTypeURL: String = "", contentType: String,
        metadata: [(name: String, value: String)] = [], httpStatus: Int? = nil
    ) {
        self.data = data
        self.dataTypeURL = dataTypeURL
        self.contentType = contentType
        self.metadata = metadata
        self.httpStatus = httpStatus
    }
}

/// Why a call into an app failed.
package enum AppChannelError: Error, Sendable, CustomStringConvertible {
    /// The app could not be reached (refused, unreachable, closed before answering).
    case unreachable(String)
    /// The app answered the call with a gRPC error status.
    case status(code: RPCCode, message: String)
    /// The call's deadline passed before the app answered.
    case deadlineExceeded
    /// The app answered something that is not a valid response.
    case protocolViolation(String)
    /// The call cannot be made to this kind of app as it is (an HTTP app called without a verb).
    case invalidRequest(String)
    /// The app's answer is over the most the runtime holds in memory for one buffered answer (`limit` bytes): a
    /// gRPC message, or an HTTP answer going to a gRPC caller.
    case tooLarge(limit: Int)
    /// The caller went away before the app's answer ended; the call into the app was abandoned.
    case cancelled

    package var description: String {
        switch self {
        case .unreachable(let why): "the app is unreachable: \(why)"
        case .status(let code, let message): "the app answered \(code) \(message)"
        case .deadlineExceeded: "the app did not answer before the deadline"
        case .protocolViolation(let why): "the app's answer is not valid: \(why)"
        case .invalidRequest(let why): why
        case .tooLarge(let limit):
            "the app's answer is over \(limit) bytes, the most hangard buffers for one answer (--max-request-bytes); "
                + "only an HTTP caller's call to an HTTP app is streamed"
        case .cancelled: "the caller went away before the app's answer ended"
        }
    }
}

/// One app's channel: how the runtime calls into it. Implemented by the front-end that speaks its protocol
/// (HangarGRPC's `GRPCAppChannel`), built by the node for each app that declares `appChannel`.
package protocol AppChannel: Sendable {
    /// Invokes a method on the app; the future completes on `eventLoop`.
    func invoke(_ invocation: AppInvocation, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppInvocationResult>

    /// Opens a streamed call to `path` on the app's own gRPC server (gRPC proxying), with `metadata` as its
    /// request headers and `deadline` (when set) as its `grpc-timeout`. `opened` is called on `eventLoop`, which
    /// must be the current one, with the open stream (its answer goes to `observer`) or with why it could not open.
    func openStream(
        path: String, metadata: [(name: String, value: String)], deadline: NIODeadline?, on eventLoop: any EventLoop,
        observer: any AppStreamObserver, opened: @escaping (Result<any AppStream, AppChannelError>) -> Void)

    /// The app's programmatic subscriptions (gRPC `AppCallback.ListTopicSubscriptions`, HTTP `GET /dapr/subscribe`
    /// with `dapr-app-id`), reference §2b: an empty list when the app has none (gRPC UNIMPLEMENTED, HTTP 404, or
    /// another HTTP status, said in `problems`). Fails when the app cannot be reached, answers another gRPC error,
    /// or answers something unreadable: the caller retries.
    func listSubscriptions(deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<AppSubscriptionList>

    /// Pushes one pub/sub event to the app (gRPC `AppCallback.OnTopicEvent`, HTTP `POST /<path>`) and reads its
    /// answer with Dapr's meaning (reference §3.2, §3.3): never `.undeliverable`. The future fails when the app could
    /// not be reached or did not answer before `deadline` (the delivery is then retried). Completes on `eventLoop`.
    func deliver(_ event: AppTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<DeliveryOutcome>

    /// Pushes a batch of events in one call (gRPC `OnBulkTopicEvent`, falling back to `OnBulkTopicEventAlpha1`;
    /// HTTP bulk JSON) and returns each entry's outcome by `entryId`; an entry the app does not answer for is
    /// missing (retried). The future fails as `deliver`'s does (every entry is then retried).
    func deliverBulk(_ batch: AppBulkTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<[String: DeliveryOutcome]>

    /// Probes the app's health (gRPC `AppCallbackHealthCheck/HealthCheck`, HTTP `GET path`).
    func checkHealth(path: String, deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<Void>

    /// Closes the channel's connections; calls in flight fail.
    func close()
}

/// Builds the channel of an app from its `appChannel`; nil when this build has no channel of that protocol.
package typealias AppChannelFactory = @Sendable (AppID, AppChannelSpec) -> (any AppChannel)?
