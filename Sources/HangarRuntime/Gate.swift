package import NIOCore

/// Admission, between the front-ends and the building blocks: who is calling and whether the call may proceed
/// (identity, detachment, the tenant's and the app's quotas, connection counts and request size).
public struct Gate: Sendable {
    package let registry: TenantRegistry
    package let metrics: RuntimeMetrics

    public init(registry: TenantRegistry, metrics: RuntimeMetrics = RuntimeMetrics()) {
        self.registry = registry
        self.metrics = metrics
    }

    /// The caller of a request and whether it may proceed: the one entry point both front-ends use. On an app's
    /// socket the connection is the app; on TCP the `dapr-api-token` says which app it is. An admitted request
    /// holds a slot of its app's and tenant's budgets until `Admission.finish()`; a refused one changes nothing.
    ///
    /// `connection` is the channel the request came on: it counts towards the app's `maxConnections` from its
    /// first admitted request (app sockets count theirs when accepted). A `stream` (a streaming gRPC call, open for
    /// as long as the app likes) counts against the app's `maxStreams` rather than `maxConcurrentRequests`.
    package func admit(
        _ listener: ListenerIdentity, token: String?, connection: (any Channel)?, stream: Bool = false
    ) throws(APIError) -> Admission {
        let caller: Caller
        switch listener {
        case .app(let app):
            caller = Caller(app: app, transport: .unixSocket)
        case .tcp:
            guard let tokenCaller = registry.caller(forToken: token) else { throw RequestError.unauthenticated() }
            caller = tokenCaller
        }
        guard let account = registry.account(caller.app) else { throw RequestError.removed(caller.app) }
        let connectionID = connection.map(ObjectIdentifier.init)
        let now = NIODeadline.now()
        switch account.admit(connection: connectionID, now: now.uptimeNanoseconds, stream: stream) {
        case .admitted(let maxRequestBytes, let newConnection):
            if newConnection, let connection, let connectionID {
                connection.closeFuture.whenComplete { _ in account.closeConnection(connectionID) }
            }
            return Admission(
                caller: caller, maxRequestBytes: maxRequestBytes, account: account, metrics: metrics, isStream: stream,
                admitted: now)
        case .refused(let refusal):
            metrics.recordQuotaRefusal(app: caller.app, quota: refusal.quota)
            throw QuotaError.exceeded(refusal, app: caller.app)
        case .inactive(.detached):
            throw RequestError.detached(caller.app)
        case .inactive:
            throw RequestError.removed(caller.app)
        }
    }

}

/// An admitted request: its caller, the size it may have, and the budget slot it holds until `finish()`.
package struct Admission: Sendable {
    package let caller: Caller
    /// The largest request message or body this caller may send (its `maxRequestBytes`, at most the node's).
    package let maxRequestBytes: Int
    let account: AppAccount
    let metrics: RuntimeMetrics
    /// Admitted against `maxStreams`.
    let isStream: Bool
    /// When the gate admitted the call: its duration in the metrics counts from here.
    let admitted: NIODeadline

    /// The caller's tenant's buffered request bytes (`BufferBudget`).
    package var buffers: BufferAccount { account.tenant.buffers }

    /// Returns the slot; call exactly once, when the call's work is done (answered, failed or abandoned).
    package func finish() { account.finish(stream: isStream) }

    /// Counts the finished call in the metrics under `method` (the Dapr gRPC method's name for both front-ends) and
    /// `transport` (`grpc` or `http`), with its duration since admission: the one place both front-ends record a
    /// call's end.
    package func record(method: String, transport: String, code: RPCCode) {
        metrics.recordRequest(
            app: caller.app, method: method, transport: transport, code: code,
            duration: .nanoseconds((NIODeadline.now() - admitted).nanoseconds))
    }

    /// Refuses a request of `size` bytes over this caller's `maxRequestBytes`; nothing has been buffered yet.
    package func checkSize(_ size: Int) throws(APIError) {
        if size > maxRequestBytes { throw tooLarge(size) }
    }

    /// The refusal of a request over `maxRequestBytes` (`size` nil when only its passing the limit is known, as
    /// for a chunked body), counted as a quota refusal.
    package func tooLarge(_ size: Int?) -> APIError {
        metrics.recordQuotaRefusal(app: caller.app, quota: "maxRequestBytes")
        return QuotaError.tooLarge(size, limit: maxRequestBytes, app: caller.app)
    }
}

/// Quota refusals: gRPC `RESOURCE_EXHAUSTED` with an `ErrorInfo` (reason `HANGAR_QUOTA_EXCEEDED`, metadata
/// naming the quota and its limit), HTTP 429 with `Retry-After` (413 for a request over `maxRequestBytes`,
/// which no retry can fix).
package enum QuotaError {
    package static let reason = "HANGAR_QUOTA_EXCEEDED"
    package static let errorCode = "ERR_QUOTA_EXCEEDED"

    package static func exceeded(_ refusal: QuotaRefusal, app: AppID) -> APIError {
        let owner = refusal.scope == .tenant ? "tenant '\(app.namespace)'" : "app \(app)"
        let unit =
            switch refusal.quota {
            case "requestsPerSecond": " requests per second"
            case "maxConcurrentRequests": " calls in flight"
            case "maxConnections": " connections"
            case "maxStreams": " open streams"
            case "maxStateBytes": " bytes"
            case "maxSubscriptions": " subscriptions"
            case "maxBufferedBytes": " buffered request bytes"
            default: ""
            }
        return APIError(
            errorCode: errorCode, rpcCode: .resourceExhausted, httpStatus: 429,
            message: "quota exceeded: \(owner) is limited to \(refusal.limit)\(unit) (\(refusal.quota))"
                + "; retry after \(refusal.retryAfterSeconds) s",
            reason: reason,
            metadata: [
                "quota": refusal.quota, "limit": String(refusal.limit), "scope": refusal.scope.rawValue,
                "namespace": app.namespace, "appId": app.appId,
                "retryAfterSeconds": String(refusal.retryAfterSeconds),
            ])
    }

    package static func tooLarge(_ size: Int?, limit: Int, app: AppID) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .resourceExhausted, httpStatus: 413,
            message: "quota exceeded: a request \(size.map { "of \($0) bytes " } ?? "")is over the maximum of "
                + "\(limit) bytes (maxRequestBytes) for app \(app)",
            reason: reason,
            metadata: [
                "quota": "maxRequestBytes", "limit": String(limit), "scope": "app", "namespace": app.namespace,
                "appId": app.appId,
            ])
    }

    package static func pubsubBytes(usage: Int, limit: Int, namespace: String, pubsub: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .resourceExhausted, httpStatus: 429,
            message: "quota exceeded: tenant '\(namespace)' may retain \(limit) bytes in pub/sub component '\(pubsub)' "
                + "(maxPubsubBytes); this publish would make it \(usage) bytes. Retry once subscribers have consumed "
                + "messages or retention has removed them",
            reason: reason,
            metadata: [
                "quota": "maxPubsubBytes", "limit": String(limit), "scope": "tenant", "namespace": namespace,
                "pubsub": pubsub, "retryAfterSeconds": "10",
            ])
    }

    package static func stateBytes(usage: Int, limit: Int, namespace: String, store: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .resourceExhausted, httpStatus: 429,
            message: "quota exceeded: tenant '\(namespace)' may store \(limit) bytes in state store '\(store)' "
                + "(maxStateBytes); this write would make it \(usage) bytes. Delete or shrink items first",
            reason: reason,
            metadata: [
                "quota": "maxStateBytes", "limit": String(limit), "scope": "tenant", "namespace": namespace,
                "store": store, "retryAfterSeconds": "60",
            ])
    }
}
