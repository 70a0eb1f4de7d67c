import CoreMetrics
package import HangarComponents
import Prometheus
import Synchronization
import HangarSync

/// The node's metrics: per-tenant and per-app series that the front-ends and the gate report into, and that the
/// Prometheus endpoint (`--metrics-listen`) exposes.
///
/// Counters and histograms are recorded on the request path, so recording must be cheap: no allocation and no
/// label formatting per call once a series exists. Gauges (connections, bytes stored, pool queue depth) are
/// read from the runtime at scrape time through `RuntimeGauges`.
///
/// Each instance has its own Prometheus registry (swift-metrics types made by a `PrometheusMetricsFactory` on a
/// `PrometheusCollectorRegistry`), so instances are independent: nothing is bootstrapped into the process-wide
/// `MetricsSystem`. The series are listed in `RuntimeMetrics.Name` and in the README's "Metrics" section.
public final class RuntimeMetrics: Sendable {
    /// The series' names.
    package enum Name {
        /// Counter `{namespace, app_id, method, transport, code}`: calls finished.
        package static let requests = "hangar_requests_total"
        /// Histogram `{namespace, app_id, method, transport}`: call latency in seconds.
        package static let requestDuration = "hangar_request_duration_seconds"
        /// Counter `{namespace, app_id, quota}`: calls refused by a quota.
        package static let quotaRefusals = "hangar_quota_refusals_total"
        /// Gauge `{namespace, app_id}`: open connections.
        package static let connections = "hangar_connections"
        /// Gauge `{namespace, store}`: bytes a tenant keeps in a state store.
        package static let stateStoredBytes = "hangar_state_stored_bytes"
        /// Gauge `{component, namespace}`: operations waiting for a component's pool.
        package static let poolQueued = "hangar_component_pool_queued"
        /// Gauge `{component, namespace}`: operations running in a component's pool.
        package static let poolRunning = "hangar_component_pool_running"
        /// Counter `{component, namespace}`: operations a component's pool admitted, waiting or not.
        package static let poolOperations = "hangar_component_pool_operations_total"
        /// Counter `{component, namespace}`: seconds those operations waited for a slot, added up.
        package static let poolWaitSeconds = "hangar_component_pool_wait_seconds_total"
        /// Gauge `{component, scope}`: operations a component's pool runs at once (its size).
        package static let poolSlots = "hangar_component_pool_slots"
        /// Gauge `{component, scope}`: connections a component holds open to its backend server.
        package static let poolConnections = "hangar_component_pool_connections"
        /// Gauge `{version}`, always 1.
        package static let buildInfo = "hangar_build_info"
        /// Counter `{namespace, app_id, target_namespace, target_app_id, code}`: service invocations finished.
        package static let invocations = "hangar_invocations_total"
        /// Histogram `{namespace, app_id, target_namespace, target_app_id}`: invocation latency in seconds.
        package static let invocationDuration = "hangar_invocation_duration_seconds"
        /// Counter `{namespace, app_id, component, topic}`: messages published (acknowledged by the component).
        package static let pubsubPublished = "hangar_pubsub_published_total"
        /// Counter `{namespace, app_id, component, topic}`: bytes of the messages published, as stored.
        package static let pubsubPublishedBytes = "hangar_pubsub_published_bytes_total"
        /// Gauge `{namespace, component}`: bytes a tenant's topics retain in a pub/sub component.
        package static let pubsubRetainedBytes = "hangar_pubsub_retained_bytes"
        /// Counter `{namespace, app_id, component, topic, outcome}`: deliveries settled, by outcome (`success`,
        /// `retry`, `drop`, `deadletter`), streamed or pushed.
        package static let pubsubDelivered = "hangar_pubsub_delivered_total"
        /// Counter `{namespace, app_id, component, topic}`: deliveries of a message delivered before (attempt > 1).
        package static let pubsubRedeliveries = "hangar_pubsub_redeliveries_total"
        /// Gauge `{namespace, app_id, component, topic}`: messages sent to subscribers and not answered yet.
        package static let pubsubInFlight = "hangar_pubsub_in_flight"
        /// Gauge `{namespace, app_id, component, topic}`: messages published to the topic that the subscribing app
        /// has not fetched yet, sampled at scrape time.
        package static let pubsubConsumerLag = "hangar_pubsub_consumer_lag"
        /// Gauge `{namespace}`: request bytes the node holds buffered for a tenant's calls.
        package static let bufferedBytes = "hangar_buffered_bytes"
        /// Gauge: request bytes buffered on the node, all tenants.
        package static let nodeBufferedBytes = "hangar_node_buffered_bytes"
        /// Gauge: the node's budget of buffered bytes (`--max-buffered-bytes`).
        package static let nodeBufferBudget = "hangar_node_buffer_budget_bytes"
        /// Gauge: the overload level, 0 normal, 1 pressure (new connections refused), 2 critical (shedding).
        package static let overloadLevel = "hangar_overload_level"
        /// Counter: connections closed to bring the node back under its buffer budget.
        package static let overloadShed = "hangar_overload_shed_connections_total"
        /// Counter: connections refused at accept while under pressure.
        package static let overloadRefused = "hangar_overload_refused_connections_total"
    }

    /// How many topics of one tenant on one pub/sub component get a `topic` label of their own: the first ones
    /// published to (since the daemon started). Later topics are counted under `topic="_other"`, so that an app
    /// inventing topic names cannot grow the node's series (and the scrape) without bound.
    package static let maxTopicLabels = 100
    /// The `topic` label of the topics beyond `maxTopicLabels`.
    package static let otherTopicLabel = "_other"
    /// The `scope` label of a node-wide component's pool series.
    package static let nodeScope = "_node"

    /// The content type of `render(gauges:)`'s output: the Prometheus text exposition format 0.0.4.
    package static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Upper bounds of `hangar_request_duration_seconds`'s buckets: 100 µs to 5 s (a state call on a warm SQLite
    /// store takes tens of microseconds; a call stuck behind a busy pool or a slow disk, seconds).
    package static let durationBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .microseconds(2500), .milliseconds(5),
        .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5),
    ]

    /// `# HELP` lines, added in front of each family's `# TYPE` line by `render(gauges:)` (swift-metrics has no
    /// notion of help text, so the factory registers none).
    static let help: [String: String] = [
        Name.requests: "Calls finished, by app, Dapr method, transport (grpc or http) and gRPC status code.",
        Name.requestDuration: "Time from a call's arrival to its answer, in seconds, by app, method and transport.",
        Name.quotaRefusals: "Calls refused by a quota, by app and quota.",
        Name.connections: "Open connections of an app, on its sockets and on the TCP listeners.",
        Name.stateStoredBytes: "Bytes a tenant keeps in a state store.",
        Name.poolQueued: "Operations waiting for a component's pool, by tenant.",
        Name.poolRunning: "Operations running in a component's pool, by tenant.",
        Name.poolOperations: "Operations a component's pool admitted, by tenant, whether they waited or not.",
        Name.poolWaitSeconds: "Seconds operations waited for a slot of a component's pool, added up, by tenant.",
        Name.poolSlots: "Operations a component's pool runs at once (scope: the component's namespace, or _node).",
        Name.poolConnections:
            "Connections a component holds open to its backend server (scope: its namespace, or _node).",
        Name.buildInfo: "Always 1; the version label is hangard's version.",
        Name.bufferedBytes: "Request bytes the node holds buffered for a tenant's calls (what maxBufferedBytes limits).",
        Name.nodeBufferedBytes: "Request bytes buffered on the node for all tenants.",
        Name.nodeBufferBudget: "The node's budget of buffered request bytes (--max-buffered-bytes).",
        Name.overloadLevel: "Overload level: 0 normal, 1 pressure (new connections refused), 2 critical (shedding).",
        Name.overloadShed: "Connections closed because the node was over its buffer budget and they held the most.",
        Name.overloadRefused: "Connections refused at accept because the node's buffers were under pressure.",
        Name.invocations: "Service invocations finished, by calling app, target app and gRPC status code.",
        Name.invocationDuration: "Time from an invocation's start to the target's answer, in seconds.",
        Name.pubsubPublished: "Messages published, by app, pub/sub component and topic (the first 100 topics of a "
            + "tenant on a component; the others as _other).",
        Name.pubsubPublishedBytes: "Bytes of the messages published, as stored, by app, pub/sub component and topic.",
        Name.pubsubRetainedBytes: "Bytes a tenant's topics retain in a pub/sub component (what maxPubsubBytes limits).",
        Name.pubsubDelivered: "Deliveries to subscribers settled, by subscribing app, component, topic and outcome "
            + "(success, retry, drop, deadletter).",
        Name.pubsubRedeliveries: "Deliveries of messages delivered before (a retry, or a lease that ended unanswered).",
        Name.pubsubInFlight: "Messages sent to subscribers (streamed or pushed) and not answered yet.",
        Name.pubsubConsumerLag: "Messages published to the topic that the subscribing app has not received yet.",
    ]

    private struct RequestKey: Hashable {
        var app: AppID
        var method: String
        var transport: String
        var code: RPCCode
    }

    /// One request series: its counter and the histogram it shares with the other codes of the same call.
    private struct RequestSeries: Sendable {
        var count: CoreMetrics.Counter
        var duration: CoreMetrics.Timer
    }

    private struct InvocationKey: Hashable {
        var caller: AppID
        var target: AppID
        var code: RPCCode
    }

    private struct RefusalKey: Hashable {
        var app: AppID
        var quota: String
    }

    private struct PublishKey: Hashable {
        var app: AppID
        var component: String
        var topic: String
    }

    /// A consumer-lag series: the labels of a delivery series (the topic label possibly folded into `_other`).
    private struct LagKey: Hashable {
        var app: AppID
        var component: String
        var topicLabel: String
    }

    private struct PublishSeries: Sendable {
        var messages: CoreMetrics.Counter
        var bytes: CoreMetrics.Counter
    }

    /// The publish and delivery series, and the topics of each (namespace, component) that have a label of their
    /// own (shared by both, so a topic is labelled or folded the same way in every pub/sub series).
    private struct Publishes {
        var series: [PublishKey: PublishSeries] = [:]
        var deliveries: [PublishKey: DeliverySeries] = [:]
        var labelled: [StoreKey: Set<String>] = [:]

        /// The `topic` label of `key`'s topic: its own while fewer than `maxTopicLabels` are, else `_other`.
        mutating func label(_ key: PublishKey) -> String {
            let scope = StoreKey(namespace: key.app.namespace, store: key.component)
            if labelled[scope, default: []].contains(key.topic) { return key.topic }
            guard labelled[scope, default: []].count < RuntimeMetrics.maxTopicLabels else {
                return RuntimeMetrics.otherTopicLabel
            }
            labelled[scope, default: []].insert(key.topic)
            return key.topic
        }
    }

    private struct StoreKey: Hashable {
        var namespace: String
        var store: String
    }

    private struct PoolKey: Hashable {
        var component: String
        var namespace: String
    }

    /// The gauge series that the last scrape set, so the next one can remove those that disappeared.
    private struct GaugeSeries {
        var connections: [AppID: CoreMetrics.Meter] = [:]
        var stateBytes: [StoreKey: CoreMetrics.Meter] = [:]
        var pubsubBytes: [StoreKey: CoreMetrics.Meter] = [:]
        var consumerLag: [LagKey: CoreMetrics.Meter] = [:]
        var poolQueued: [PoolKey: CoreMetrics.Meter] = [:]
        var poolRunning: [PoolKey: CoreMetrics.Meter] = [:]
        var poolSlots: [PoolKey: CoreMetrics.Meter] = [:]
        var poolConnections: [PoolKey: CoreMetrics.Meter] = [:]
        var bufferedBytes: [String: CoreMetrics.Meter] = [:]
        /// The node's buffer and overload gauges, by metric name.
        var node: [String: CoreMetrics.Meter] = [:]
        var overloadShed: (counter: CoreMetrics.Counter, last: Int)?
        var overloadRefused: (counter: CoreMetrics.Counter, last: Int)?
        /// Counters fed from cumulative totals: each scrape adds what grew since the last.
        var poolOperations: [PoolKey: (counter: CoreMetrics.Counter, last: Int)] = [:]
        var poolWaitSeconds: [PoolKey: (counter: CoreMetrics.FloatingPointCounter, last: Duration)] = [:]
        /// The size of the last scrape's output, to reserve that much for the next.
        var lastSize = 4096
    }

    private let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    private let requests = Locked<[RequestKey: RequestSeries]>([:])
    private let refusals = Locked<[RefusalKey: CoreMetrics.Counter]>([:])
    private let invocations = Locked<[InvocationKey: RequestSeries]>([:])
    private let publishes = Locked(Publishes())
    /// Also serializes scrapes: a scrape sets the gauges and emits under this lock.
    private let gaugeSeries = Locked(GaugeSeries())
    private let buildInfo: CoreMetrics.Meter

    /// - Parameter version: the `version` label of `hangar_build_info`.
    public init(version: String = RuntimeMetrics.defaultVersion) {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            Name.requestDuration: Self.durationBuckets, Name.invocationDuration: Self.durationBuckets,
        ]
        self.registry = registry
        self.factory = factory
        self.buildInfo = CoreMetrics.Meter(label: Name.buildInfo, dimensions: [("version", version)], factory: factory)
        buildInfo.set(1)
    }

    /// hangard's version, as `hangar_build_info` reports it: `MetadataAPI.runtimeVersion` without its `hangar-`.
    public static var defaultVersion: String {
        let version = MetadataAPI.runtimeVersion
        return version.hasPrefix("hangar-") ? String(version.dropFirst("hangar-".count)) : version
    }

    // MARK: Recording (the request path)

    /// One finished call. `method` is the Dapr gRPC method name (`GetState`, `SaveState`, ...) for both front-ends;
    /// `transport` is `grpc` or `http`; `code` is the call's result.
    ///
    /// Every distinct (app, method, transport, code) is a series that lives as long as this object, so `method`
    /// and `transport` must come from a fixed set, never from the request (an unknown route is one fixed name).
    /// After a series' first call, recording is one lock and one dictionary lookup to find it (no allocation, no
    /// label formatting), then the counter's atomic increment and the histogram's own short lock.
    package func recordRequest(app: AppID, method: String, transport: String, code: RPCCode, duration: Duration) {
        let key = RequestKey(app: app, method: method, transport: transport, code: code)
        let series = requests.withLock { $0[key] } ?? makeRequestSeries(key)
        series.count.increment()
        series.duration.recordNanoseconds(Self.nanoseconds(duration))
    }

    /// A call refused by a quota (`requestsPerSecond`, `maxConcurrentRequests`, `maxRequestBytes`,
    /// `maxConnections`, `maxStreams`, `maxStateBytes`).
    package func recordQuotaRefusal(app: AppID, quota: String) {
        let key = RefusalKey(app: app, quota: quota)
        let counter = refusals.withLock { $0[key] } ?? makeRefusalCounter(key)
        counter.increment()
    }

    /// One finished service invocation from `caller` to `target` (both declared apps, so the series are bounded
    /// by the configuration).
    package func recordInvocation(caller: AppID, target: AppID, code: RPCCode, duration: Duration) {
        let key = InvocationKey(caller: caller, target: target, code: code)
        let series = invocations.withLock { $0[key] } ?? makeInvocationSeries(key)
        series.count.increment()
        series.duration.recordNanoseconds(Self.nanoseconds(duration))
    }

    /// Messages `app` published to `topic` (as the app names it) on the pub/sub `component`, and their bytes. The
    /// topic label is bounded by `maxTopicLabels` per tenant and component.
    package func recordPublish(app: AppID, component: String, topic: String, messages: Int, bytes: Int) {
        let key = PublishKey(app: app, component: component, topic: topic)
        let series = publishes.withLock { $0.series[key] } ?? makePublishSeries(key)
        series.messages.increment(by: Int64(messages))
        series.bytes.increment(by: Int64(bytes))
    }

    private func makePublishSeries(_ key: PublishKey) -> PublishSeries {
        publishes.withLock { publishes in
            if let existing = publishes.series[key] { return existing }
            let labels = [
                ("namespace", key.app.namespace), ("app_id", key.app.appId), ("component", key.component),
                ("topic", publishes.label(key)),
            ]
            // The registry hands out one series per label set: topics folded into `_other` share theirs.
            let series = PublishSeries(
                messages: CoreMetrics.Counter(label: Name.pubsubPublished, dimensions: labels, factory: factory),
                bytes: CoreMetrics.Counter(label: Name.pubsubPublishedBytes, dimensions: labels, factory: factory))
            publishes.series[key] = series
            return series
        }
    }

    /// The delivery series of `app`'s subscription to `topic` on `component`, for a delivery loop to keep (one
    /// lookup when the loop starts; recording is then the series' own atomics). The topic label is bounded as
    /// the publish series' is.
    package func deliverySeries(app: AppID, component: String, topic: String) -> DeliverySeries {
        let key = PublishKey(app: app, component: component, topic: topic)
        return publishes.withLock { publishes in
            if let existing = publishes.deliveries[key] { return existing }
            let labels = [
                ("namespace", key.app.namespace), ("app_id", key.app.appId), ("component", key.component),
                ("topic", publishes.label(key)),
            ]
            func outcome(_ name: String) -> CoreMetrics.Counter {
                CoreMetrics.Counter(label: Name.pubsubDelivered, dimensions: labels + [("outcome", name)], factory: factory)
            }
            let series = DeliverySeries(
                topicLabel: labels[3].1, position: ConsumerPosition(),
                success: outcome("success"), retry: outcome("retry"), drop: outcome("drop"),
                deadLetter: outcome("deadletter"),
                redeliveries: CoreMetrics.Counter(label: Name.pubsubRedeliveries, dimensions: labels, factory: factory),
                inFlight: CoreMetrics.Meter(label: Name.pubsubInFlight, dimensions: labels, factory: factory))
            publishes.deliveries[key] = series
            return series
        }
    }

    private func makeInvocationSeries(_ key: InvocationKey) -> RequestSeries {
        let labels = [
            ("namespace", key.caller.namespace), ("app_id", key.caller.appId),
            ("target_namespace", key.target.namespace), ("target_app_id", key.target.appId),
        ]
        let series = RequestSeries(
            count: CoreMetrics.Counter(
                label: Name.invocations, dimensions: labels + [("code", key.code.metricLabel)], factory: factory),
            duration: CoreMetrics.Timer(label: Name.invocationDuration, dimensions: labels, factory: factory))
        return invocations.withLock { invocations in
            if let existing = invocations[key] { return existing }
            invocations[key] = series
            return series
        }
    }

    private func makeRequestSeries(_ key: RequestKey) -> RequestSeries {
        let labels = [
            ("namespace", key.app.namespace), ("app_id", key.app.appId), ("method", key.method),
            ("transport", key.transport),
        ]
        // The registry hands out one series per label set, so a race between two first calls creates one series,
        // and every code of a call shares one histogram.
        let series = RequestSeries(
            count: CoreMetrics.Counter(
                label: Name.requests, dimensions: labels + [("code", key.code.metricLabel)], factory: factory),
            duration: CoreMetrics.Timer(label: Name.requestDuration, dimensions: labels, factory: factory))
        return requests.withLock { requests in
            if let existing = requests[key] { return existing }
            requests[key] = series
            return series
        }
    }

    private func makeRefusalCounter(_ key: RefusalKey) -> CoreMetrics.Counter {
        let counter = CoreMetrics.Counter(
            label: Name.quotaRefusals,
            dimensions: [("namespace", key.app.namespace), ("app_id", key.app.appId), ("quota", key.quota)],
            factory: factory)
        return refusals.withLock { refusals in
            if let existing = refusals[key] { return existing }
            refusals[key] = counter
            return counter
        }
    }

    /// Whole nanoseconds, 0 for a negative duration, `Int64.max` past it.
    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 else { return 0 }
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        let (total, overflowTotal) = whole.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowTotal ? .max : total
    }

    // MARK: Scraping

    /// Sets the gauges from `gauges` (removing the series of apps, stores and pools no longer in it) and returns
    /// every series in the Prometheus text exposition format (`contentType`). Entries of `gauges` with the same
    /// labels are added up.
    package func render(gauges: RuntimeGauges) -> [UInt8] {
        gaugeSeries.withLock { series in
            update(
                &series.connections, name: Name.connections,
                values: sums(gauges.connections.map { ($0.app, $0.open) })
            ) { [("namespace", $0.namespace), ("app_id", $0.appId)] }
            update(
                &series.stateBytes, name: Name.stateStoredBytes,
                values: sums(gauges.stateBytes.map { (StoreKey(namespace: $0.namespace, store: $0.store), $0.bytes) })
            ) { [("namespace", $0.namespace), ("store", $0.store)] }
            update(
                &series.pubsubBytes, name: Name.pubsubRetainedBytes,
                values: sums(
                    gauges.pubsubBytes.map { (StoreKey(namespace: $0.namespace, store: $0.component), $0.bytes) })
            ) { [("namespace", $0.namespace), ("component", $0.store)] }
            let pools = gauges.poolQueues.map { PoolKey(component: $0.component, namespace: $0.namespace) }
            update(
                &series.poolQueued, name: Name.poolQueued,
                values: sums(zip(pools, gauges.poolQueues.map(\.queued)))
            ) { [("component", $0.component), ("namespace", $0.namespace)] }
            update(
                &series.poolRunning, name: Name.poolRunning,
                values: sums(zip(pools, gauges.poolQueues.map(\.running)))
            ) { [("component", $0.component), ("namespace", $0.namespace)] }
            let scoped = { (component: String, namespace: String?) in
                PoolKey(component: component, namespace: namespace ?? Self.nodeScope)
            }
            update(
                &series.poolSlots, name: Name.poolSlots,
                values: sums(gauges.poolSlots.map { (scoped($0.component, $0.namespace), $0.value) })
            ) { [("component", $0.component), ("scope", $0.namespace)] }
            update(
                &series.poolConnections, name: Name.poolConnections,
                values: sums(gauges.poolConnections.map { (scoped($0.component, $0.namespace), $0.value) })
            ) { [("component", $0.component), ("scope", $0.namespace)] }
            for wait in gauges.poolWaits {
                let key = PoolKey(component: wait.component, namespace: wait.namespace)
                let labels = [("component", wait.component), ("namespace", wait.namespace)]
                let operations =
                    series.poolOperations[key]
                    ?? (CoreMetrics.Counter(label: Name.poolOperations, dimensions: labels, factory: factory), 0)
                // A replaced pool starts again from zero: its new total counts from there.
                let grown = wait.waits.admitted >= operations.last ? wait.waits.admitted - operations.last : wait.waits.admitted
                operations.counter.increment(by: grown)
                series.poolOperations[key] = (operations.counter, wait.waits.admitted)
                let seconds =
                    series.poolWaitSeconds[key]
                    ?? (
                        CoreMetrics.FloatingPointCounter(
                            label: Name.poolWaitSeconds, dimensions: labels, factory: factory), .zero
                    )
                let waited = wait.waits.waited >= seconds.last ? wait.waits.waited - seconds.last : wait.waits.waited
                let (whole, fraction) = waited.components
                seconds.counter.increment(by: Double(whole) + Double(fraction) / 1e18)
                series.poolWaitSeconds[key] = (seconds.counter, wait.waits.waited)
            }

            update(&series.bufferedBytes, name: Name.bufferedBytes, values: gauges.bufferedBytes) {
                [("namespace", $0)]
            }
            if let node = gauges.buffers {
                for (name, value) in [
                    (Name.nodeBufferedBytes, node.used), (Name.nodeBufferBudget, node.limit),
                    (Name.overloadLevel, node.level),
                ] {
                    let meter = series.node[name] ?? CoreMetrics.Meter(label: name, dimensions: [], factory: factory)
                    meter.set(Double(value))
                    series.node[name] = meter
                }
                func count(_ slot: inout (counter: CoreMetrics.Counter, last: Int)?, _ name: String, _ total: Int) {
                    let current = slot ?? (CoreMetrics.Counter(label: name, dimensions: [], factory: factory), 0)
                    if total > current.last { current.counter.increment(by: total - current.last) }
                    slot = (current.counter, max(total, current.last))
                }
                count(&series.overloadShed, Name.overloadShed, node.shed)
                count(&series.overloadRefused, Name.overloadRefused, node.refusedConnections)
            }

            let deliveries = publishes.withLock { $0.deliveries }
            var lags: [LagKey: Int] = [:]
            for (key, delivery) in deliveries {
                guard let lag = delivery.position.lag else { continue }
                lags[LagKey(app: key.app, component: key.component, topicLabel: delivery.topicLabel), default: 0] += lag
            }
            update(&series.consumerLag, name: Name.pubsubConsumerLag, values: lags) {
                [("namespace", $0.app.namespace), ("app_id", $0.app.appId), ("component", $0.component),
                 ("topic", $0.topicLabel)]
            }

            var emitted: [UInt8] = []
            emitted.reserveCapacity(series.lastSize)
            registry.emit(into: &emitted)
            let output = Self.addingHelp(to: emitted)
            series.lastSize = output.count + output.count / 8
            return output
        }
    }

    private func sums<Key: Hashable>(_ entries: some Sequence<(Key, Int)>) -> [Key: Int] {
        var sums: [Key: Int] = [:]
        for (key, value) in entries { sums[key, default: 0] += value }
        return sums
    }

    /// Sets one gauge per key of `values`, creating the missing series and destroying those not in `values`.
    private func update<Key: Hashable>(
        _ series: inout [Key: CoreMetrics.Meter], name: String, values: [Key: Int],
        dimensions: (Key) -> [(String, String)]
    ) {
        for key in series.keys where values[key] == nil {
            series.removeValue(forKey: key)?.destroy()
        }
        for (key, value) in values {
            let meter: CoreMetrics.Meter
            if let existing = series[key] {
                meter = existing
            } else {
                meter = CoreMetrics.Meter(label: name, dimensions: dimensions(key), factory: factory)
                series[key] = meter
            }
            meter.set(value)
        }
    }

    /// The registry's output with a `# HELP` line in front of each `# TYPE` line whose family has help text.
    private static func addingHelp(to emitted: [UInt8]) -> [UInt8] {
        let typePrefix = Array("# TYPE ".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(emitted.count + 128 * help.count)
        var start = emitted.startIndex
        while start < emitted.endIndex {
            let end = emitted[start...].firstIndex(of: UInt8(ascii: "\n")) ?? emitted.endIndex
            let line = emitted[start..<end]
            if line.starts(with: typePrefix) {
                let nameStart = start + typePrefix.count
                let nameEnd = line[nameStart...].firstIndex(of: UInt8(ascii: " ")) ?? end
                let name = String(decoding: emitted[nameStart..<nameEnd], as: UTF8.self)
                if let text = help[name] {
                    output.append(contentsOf: "# HELP \(name) \(text)\n".utf8)
                }
            }
            output.append(contentsOf: line)
            output.append(UInt8(ascii: "\n"))
            start = end + 1
        }
        return output
    }
}

extension RPCCode {
    /// The code's canonical gRPC name (`OK`, `NOT_FOUND`, `RESOURCE_EXHAUSTED`, ...), the `code` label's value.
    var metricLabel: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        }
    }
}

/// The delivery series of one subscribing app's topic on one component (`RuntimeMetrics.deliverySeries`).
package struct DeliverySeries: Sendable {
    /// How a delivery was settled, as the `outcome` label says it.
    package enum Outcome: Sendable {
        case success, retry, drop, deadLetter
    }

    /// The `topic` label of the series.
    fileprivate let topicLabel: String
    /// How far the app's consumer has fetched, for `hangar_pubsub_consumer_lag`.
    package let position: ConsumerPosition
    fileprivate let success: CoreMetrics.Counter
    fileprivate let retry: CoreMetrics.Counter
    fileprivate let drop: CoreMetrics.Counter
    fileprivate let deadLetter: CoreMetrics.Counter
    fileprivate let redeliveries: CoreMetrics.Counter
    fileprivate let inFlight: CoreMetrics.Meter

    /// One delivery settled.
    package func record(_ outcome: Outcome) {
        switch outcome {
        case .success: success.increment()
        case .retry: retry.increment()
        case .drop: drop.increment()
        case .deadLetter: deadLetter.increment()
        }
    }

    /// One delivery of a message delivered before.
    package func recordRedelivery() { redeliveries.increment() }

    /// Messages sent and not answered: `delta` more (negative: fewer).
    package func addInFlight(_ delta: Int) {
        if delta > 0 { inFlight.increment(by: Double(delta)) } else if delta < 0 { inFlight.decrement(by: Double(-delta)) }
    }
}

/// Gauges sampled at scrape time.
package struct RuntimeGauges: Sendable {
    package struct Connections: Sendable {
        package var app: AppID
        package var open: Int

        package init(app: AppID, open: Int) {
            self.app = app
            self.open = open
        }
    }

    package struct StateBytes: Sendable {
        package var namespace: String
        /// The state store's component name.
        package var store: String
        package var bytes: Int

        package init(namespace: String, store: String, bytes: Int) {
            self.namespace = namespace
            self.store = store
            self.bytes = bytes
        }
    }

    package struct PubSubBytes: Sendable {
        package var namespace: String
        /// The pub/sub component's name.
        package var component: String
        package var bytes: Int

        package init(namespace: String, component: String, bytes: Int) {
            self.namespace = namespace
            self.component = component
            self.bytes = bytes
        }
    }

    /// One tenant's admissions into a component's pool and their waits (cumulative).
    package struct PoolWait: Sendable {
        package var component: String
        package var namespace: String
        package var waits: PoolWaits

        package init(component: String, namespace: String, waits: PoolWaits) {
            self.component = component
            self.namespace = namespace
            self.waits = waits
        }
    }

    /// A number about one component's pool as a whole.
    package struct PoolValue: Sendable {
        package var component: String
        /// The component's namespace; nil for a node-wide one.
        package var namespace: String?
        package var value: Int

        package init(component: String, namespace: String?, value: Int) {
            self.component = component
            self.namespace = namespace
            self.value = value
        }
    }

    package struct PoolQueue: Sendable {
        /// The component's name.
        package var component: String
        package var namespace: String
        /// Operations waiting for the pool.
        package var queued: Int
        /// Operations running in the pool.
        package var running: Int

        package init(component: String, namespace: String, queued: Int, running: Int) {
            self.component = component
            self.namespace = namespace
            self.queued = queued
            self.running = running
        }
    }

    package var connections: [Connections] = []
    package var stateBytes: [StateBytes] = []
    package var pubsubBytes: [PubSubBytes] = []
    package var poolQueues: [PoolQueue] = []
    package var poolWaits: [PoolWait] = []
    package var poolSlots: [PoolValue] = []
    package var poolConnections: [PoolValue] = []
    /// Buffered request bytes by tenant.
    package var bufferedBytes: [String: Int] = [:]
    /// The node's buffer budget and overload state.
    package var buffers: NodeBuffers?

    package struct NodeBuffers: Sendable {
        package var used: Int
        package var limit: Int
        package var level: Int
        package var shed: Int
        package var refusedConnections: Int

        package init(used: Int, limit: Int, level: Int, shed: Int, refusedConnections: Int) {
            self.used = used
            self.limit = limit
            self.level = level
            self.shed = shed
            self.refusedConnections = refusedConnections
        }
    }

    package init() {}
}

/// How far one app's consumer of a topic has fetched, as its delivery loops see it, and where to read the topic's
/// last sequence: the consumer lag at scrape time is the difference. Unknown (no lag reported) until a loop has
/// fetched once; the component is held weakly, so a retired one stops reporting.
package final class ConsumerPosition: Sendable {
    private struct Source {
        weak var pubsub: (any PubSub)?
        var topic: String
    }

    private let fetched = Atomic<UInt64>(0)
    private let source = Locked<Source?>(nil)

    /// The loop's component and physical topic (each loop sets it when it starts; they are the same for every loop
    /// of one series, unless the component was replaced).
    package func track(_ pubsub: any PubSub, topic: String) {
        source.withLock { $0 = Source(pubsub: pubsub, topic: topic) }
    }

    /// The consumer has fetched every message up to `sequence` (0: none yet, which is known too); it only moves
    /// forward.
    package func advance(to sequence: UInt64) {
        // Stored plus one: 0 is "unknown".
        let stored = sequence &+ 1
        var current = fetched.load(ordering: .relaxed)
        while stored > current {
            let (exchanged, original) = fetched.compareExchange(
                expected: current, desired: stored, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }

    /// Messages published after what the consumer fetched; nil while unknown.
    var lag: Int? {
        let stored = fetched.load(ordering: .relaxed)
        guard stored > 0, let source = source.withLock({ $0 }), let pubsub = source.pubsub else { return nil }
        let last = pubsub.lastSequence(of: source.topic)
        let position = stored - 1
        return last > position ? Int(last - position) : 0
    }
}
