/// The node's metrics: per-tenant and per-app series that the front-ends and the gate report into, and that the
/// Prometheus endpoint (`--metrics-listen`) exposes.
///
/// Counters and histograms are recorded on the request path, so recording must be cheap: no allocation and no
/// label formatting per call once a series exists. Gauges (connections, bytes stored, pool queue depth) are
/// read from the runtime at scrape time through `RuntimeGauges`.
public final class RuntimeMetrics: Sendable {
    public init() {}

    /// One finished call. `method` is the Dapr gRPC method name (`GetState`, `SaveState`, ...) for both front-ends;
    /// `transport` is `grpc` or `http`; `code` is the call's result.
    public func recordRequest(app: AppID, method: String, transport: String, code: RPCCode, duration: Duration) {}

    /// A call refused by a quota (`requestsPerSecond`, `maxConcurrentRequests`, `maxRequestBytes`,
    /// `maxConnections`, `maxStateBytes`).
    public func recordQuotaRefusal(app: AppID, quota: String) {}
}

/// Gauges sampled at scrape time.
public struct RuntimeGauges: Sendable {
    public struct Connections: Sendable {
        public var app: AppID
        public var open: Int
    }

    public struct StateBytes: Sendable {
        public var namespace: String
        /// The state store's component name.
        public var store: String
        public var bytes: Int
    }

    public struct PoolQueue: Sendable {
        /// The component's name.
        public var component: String
        public var namespace: String
        /// Operations waiting for the pool.
        public var queued: Int
        /// Operations running in the pool.
        public var running: Int
    }

    public var connections: [Connections] = []
    public var stateBytes: [StateBytes] = []
    public var poolQueues: [PoolQueue] = []

    public init() {}
}
