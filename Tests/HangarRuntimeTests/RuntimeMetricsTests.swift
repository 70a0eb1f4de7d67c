import Testing

@testable import HangarRuntime

/// `RuntimeMetrics`: what is recorded shows up in `render(gauges:)` with the exact label sets and values, and the
/// output is valid Prometheus text exposition.
@Suite struct RuntimeMetricsTests {
    let orders = AppID(namespace: "team-a", appId: "orders")
    let billing = AppID(namespace: "team-a", appId: "billing")

    /// One rendered scrape: its sample lines by series (`name{labels}`), and its `# TYPE` and `# HELP` lines.
    struct Exposition {
        var samples: [String: Double] = [:]
        var types: [String: String] = [:]
        var help: [String: String] = [:]
        var text: String

        /// Parses `bytes`, failing the test on any line that is not a comment, a blank or `series value`.
        init(_ bytes: [UInt8]) {
            text = String(decoding: bytes, as: UTF8.self)
            #expect(text.isEmpty || text.hasSuffix("\n"))
            for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
                if line.hasPrefix("# TYPE ") {
                    let parts = line.dropFirst("# TYPE ".count).split(separator: " ")
                    #expect(parts.count == 2, "bad TYPE line: \(line)")
                    #expect(types[String(parts[0])] == nil, "TYPE twice for \(parts[0])")
                    types[String(parts[0])] = String(parts[1])
                } else if line.hasPrefix("# HELP ") {
                    let rest = line.dropFirst("# HELP ".count)
                    let space = rest.firstIndex(of: " ") ?? rest.endIndex
                    help[String(rest[..<space])] = String(rest[space...].dropFirst())
                } else if line.hasPrefix("#") {
                    continue
                } else {
                    // Label values here contain no spaces, so the value is after the last one.
                    guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...])
                    else {
                        Issue.record("not a sample line: \(line)")
                        continue
                    }
                    let series = String(line[..<space])
                    #expect(samples[series] == nil, "series twice: \(series)")
                    samples[series] = value
                }
            }
        }

        /// Sample names of one family (`name`, `name_bucket`, `name_sum`, `name_count`).
        func series(of family: String) -> [String] {
            samples.keys.filter {
                $0 == family || $0.hasPrefix(family + "{") || $0.hasPrefix(family + "_bucket")
                    || $0.hasPrefix(family + "_sum") || $0.hasPrefix(family + "_count")
            }.sorted()
        }
    }

    @Test func freshInstanceHasOnlyBuildInfo() {
        let metrics = RuntimeMetrics(version: "1.2.3")
        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        #expect(scrape.samples == [#"hangar_build_info{version="1.2.3"}"#: 1])
        #expect(scrape.types == ["hangar_build_info": "gauge"])
        #expect(scrape.help["hangar_build_info"] != nil)
        #expect(
            Exposition(RuntimeMetrics().render(gauges: RuntimeGauges())).samples.keys.contains {
                $0.hasPrefix("hangar_build_info{version=") && $0 != #"hangar_build_info{version=""}"#
            })
    }

    @Test func requestsAreCountedPerLabelSet() {
        let metrics = RuntimeMetrics()
        metrics.recordRequest(
            app: orders, method: "GetState", transport: "grpc", code: .ok, duration: .microseconds(40))
        metrics.recordRequest(app: orders, method: "GetState", transport: "grpc", code: .ok, duration: .milliseconds(3))
        metrics.recordRequest(
            app: orders, method: "GetState", transport: "grpc", code: .notFound, duration: .microseconds(80))
        metrics.recordRequest(
            app: orders, method: "SaveState", transport: "http", code: .resourceExhausted, duration: .seconds(7))
        metrics.recordRequest(app: billing, method: "GetState", transport: "grpc", code: .ok, duration: .zero)

        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        let prefix = #"hangar_requests_total{namespace="team-a","#
        #expect(scrape.types["hangar_requests_total"] == "counter")
        #expect(scrape.help["hangar_requests_total"] != nil)
        #expect(
            scrape.series(of: "hangar_requests_total") == [
                prefix + #"app_id="billing",method="GetState",transport="grpc",code="OK"}"#,
                prefix + #"app_id="orders",method="GetState",transport="grpc",code="NOT_FOUND"}"#,
                prefix + #"app_id="orders",method="GetState",transport="grpc",code="OK"}"#,
                prefix + #"app_id="orders",method="SaveState",transport="http",code="RESOURCE_EXHAUSTED"}"#,
            ])
        #expect(scrape.samples[prefix + #"app_id="orders",method="GetState",transport="grpc",code="OK"}"#] == 2)
        #expect(scrape.samples[prefix + #"app_id="orders",method="GetState",transport="grpc",code="NOT_FOUND"}"#] == 1)
        #expect(scrape.samples[prefix + #"app_id="billing",method="GetState",transport="grpc",code="OK"}"#] == 1)
    }

    @Test func invocationsAreCountedByCallerTargetAndCode() {
        let metrics = RuntimeMetrics()
        let outsider = AppID(namespace: "team-b", appId: "checkout")
        metrics.recordInvocation(caller: billing, target: orders, code: .ok, duration: .milliseconds(2))
        metrics.recordInvocation(caller: billing, target: orders, code: .ok, duration: .milliseconds(4))
        metrics.recordInvocation(caller: outsider, target: orders, code: .permissionDenied, duration: .zero)

        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        #expect(scrape.types["hangar_invocations_total"] == "counter")
        #expect(scrape.types["hangar_invocation_duration_seconds"] == "histogram")
        let billingToOrders =
            #"hangar_invocations_total{namespace="team-a",app_id="billing",target_namespace="team-a","#
            + #"target_app_id="orders",code="OK"}"#
        let denied =
            #"hangar_invocations_total{namespace="team-b",app_id="checkout",target_namespace="team-a","#
            + #"target_app_id="orders",code="PERMISSION_DENIED"}"#
        #expect(scrape.series(of: "hangar_invocations_total") == [billingToOrders, denied].sorted())
        #expect(scrape.samples[billingToOrders] == 2)
        #expect(scrape.samples[denied] == 1)
        let count =
            #"hangar_invocation_duration_seconds_count{namespace="team-a",app_id="billing",target_namespace="team-a","#
            + #"target_app_id="orders"}"#
        #expect(scrape.samples[count] == 2)
    }

    @Test func durationsFillTheHistogramBuckets() {
        let metrics = RuntimeMetrics()
        // Three calls of GetState on gRPC (two codes, one histogram) and one on HTTP.
        metrics.recordRequest(
            app: orders, method: "GetState", transport: "grpc", code: .ok, duration: .microseconds(40))
        metrics.recordRequest(app: orders, method: "GetState", transport: "grpc", code: .ok, duration: .milliseconds(3))
        metrics.recordRequest(
            app: orders, method: "GetState", transport: "grpc", code: .notFound, duration: .seconds(7))
        metrics.recordRequest(app: orders, method: "GetState", transport: "http", code: .ok, duration: .seconds(1))

        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        #expect(scrape.types["hangar_request_duration_seconds"] == "histogram")
        let labels = #"namespace="team-a",app_id="orders",method="GetState",transport="grpc""#
        func bucket(_ le: String) -> Double? {
            scrape.samples["hangar_request_duration_seconds_bucket{\(labels),le=\"\(le)\"}"]
        }
        // Cumulative: 40 µs is in every bucket, 3 ms from 0.005 up, 7 s only in +Inf.
        #expect(bucket("0.0001") == 1)
        #expect(bucket("0.0025") == 1)
        #expect(bucket("0.005") == 2)
        #expect(bucket("1.0") == 2)
        #expect(bucket("5.0") == 2)
        #expect(bucket("+Inf") == 3)
        #expect(scrape.samples["hangar_request_duration_seconds_count{\(labels)}"] == 3)
        let sum = scrape.samples["hangar_request_duration_seconds_sum{\(labels)}"] ?? 0
        #expect(abs(sum - 7.00304) < 1e-9)
        // Every bound of RuntimeMetrics.durationBuckets plus +Inf, for each of the two histograms.
        let buckets = scrape.series(of: "hangar_request_duration_seconds").filter { $0.contains("_bucket{") }
        #expect(buckets.count == 2 * (RuntimeMetrics.durationBuckets.count + 1))
        let http = #"namespace="team-a",app_id="orders",method="GetState",transport="http""#
        #expect(scrape.samples["hangar_request_duration_seconds_count{\(http)}"] == 1)
    }

    @Test func quotaRefusalsAreCounted() {
        let metrics = RuntimeMetrics()
        metrics.recordQuotaRefusal(app: orders, quota: "requestsPerSecond")
        metrics.recordQuotaRefusal(app: orders, quota: "requestsPerSecond")
        metrics.recordQuotaRefusal(app: billing, quota: "maxStateBytes")

        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        #expect(scrape.types["hangar_quota_refusals_total"] == "counter")
        #expect(
            scrape.samples[
                #"hangar_quota_refusals_total{namespace="team-a",app_id="orders",quota="requestsPerSecond"}"#]
                == 2)
        #expect(
            scrape.samples[#"hangar_quota_refusals_total{namespace="team-a",app_id="billing",quota="maxStateBytes"}"#]
                == 1)
        #expect(scrape.series(of: "hangar_quota_refusals_total").count == 2)
    }

    @Test("a pool's size, backend connections and the waits of its tenants' operations are exported")
    func poolSizeConnectionsAndWaits() {
        let metrics = RuntimeMetrics()
        var gauges = RuntimeGauges()
        gauges.poolSlots = [.init(component: "redisstore", namespace: nil, value: 256)]
        gauges.poolConnections = [.init(component: "redisstore", namespace: nil, value: 3)]
        gauges.poolWaits = [
            .init(component: "redisstore", namespace: "team-a", waits: PoolWaits(admitted: 10, waited: .milliseconds(250)))
        ]
        var scrape = Exposition(metrics.render(gauges: gauges))
        #expect(scrape.types["hangar_component_pool_slots"] == "gauge")
        #expect(scrape.types["hangar_component_pool_operations_total"] == "counter")
        #expect(scrape.types["hangar_component_pool_wait_seconds_total"] == "counter")
        #expect(scrape.samples[#"hangar_component_pool_slots{component="redisstore",scope="_node"}"#] == 256)
        #expect(scrape.samples[#"hangar_component_pool_connections{component="redisstore",scope="_node"}"#] == 3)
        let operations = #"hangar_component_pool_operations_total{component="redisstore",namespace="team-a"}"#
        let waited = #"hangar_component_pool_wait_seconds_total{component="redisstore",namespace="team-a"}"#
        #expect(scrape.samples[operations] == 10)
        #expect(scrape.samples[waited] == 0.25)

        // The totals grow; the counters follow them.
        gauges.poolWaits[0].waits = PoolWaits(admitted: 25, waited: .milliseconds(1250))
        scrape = Exposition(metrics.render(gauges: gauges))
        #expect(scrape.samples[operations] == 25)
        #expect(scrape.samples[waited] == 1.25)
    }

    @Test func gaugesAreSetAtScrapeTimeAndRemovedWhenGone() {
        let metrics = RuntimeMetrics()
        var gauges = RuntimeGauges()
        gauges.connections = [
            .init(app: orders, open: 3), .init(app: billing, open: 1), .init(app: orders, open: 2),
        ]
        gauges.stateBytes = [.init(namespace: "team-a", store: "statestore", bytes: 1234)]
        gauges.poolQueues = [.init(component: "statestore", namespace: "team-a", queued: 4, running: 2)]

        var scrape = Exposition(metrics.render(gauges: gauges))
        #expect(scrape.types["hangar_connections"] == "gauge")
        #expect(scrape.types["hangar_state_stored_bytes"] == "gauge")
        #expect(scrape.types["hangar_component_pool_queued"] == "gauge")
        #expect(scrape.types["hangar_component_pool_running"] == "gauge")
        // Entries with the same labels add up.
        #expect(scrape.samples[#"hangar_connections{namespace="team-a",app_id="orders"}"#] == 5)
        #expect(scrape.samples[#"hangar_connections{namespace="team-a",app_id="billing"}"#] == 1)
        #expect(scrape.samples[#"hangar_state_stored_bytes{namespace="team-a",store="statestore"}"#] == 1234)
        #expect(scrape.samples[#"hangar_component_pool_queued{component="statestore",namespace="team-a"}"#] == 4)
        #expect(scrape.samples[#"hangar_component_pool_running{component="statestore",namespace="team-a"}"#] == 2)

        // billing detached, the pool and the store went away: their series go, the others take the new values.
        gauges.connections = [.init(app: orders, open: 0)]
        gauges.stateBytes = []
        gauges.poolQueues = []
        scrape = Exposition(metrics.render(gauges: gauges))
        #expect(scrape.series(of: "hangar_connections") == [#"hangar_connections{namespace="team-a",app_id="orders"}"#])
        #expect(scrape.samples[#"hangar_connections{namespace="team-a",app_id="orders"}"#] == 0)
        #expect(scrape.series(of: "hangar_state_stored_bytes").isEmpty)
        #expect(scrape.series(of: "hangar_component_pool_queued").isEmpty)
        #expect(scrape.series(of: "hangar_component_pool_running").isEmpty)
        #expect(scrape.types["hangar_state_stored_bytes"] == nil)

        // And come back when they reappear.
        gauges.connections.append(.init(app: billing, open: 7))
        scrape = Exposition(metrics.render(gauges: gauges))
        #expect(scrape.samples[#"hangar_connections{namespace="team-a",app_id="billing"}"#] == 7)
    }

    @Test func instancesAreIndependent() {
        let first = RuntimeMetrics()
        let second = RuntimeMetrics()
        first.recordQuotaRefusal(app: orders, quota: "maxConnections")
        let scrape = Exposition(second.render(gauges: RuntimeGauges()))
        #expect(scrape.series(of: "hangar_quota_refusals_total").isEmpty)
    }

    @Test func labelValuesAreEscaped() {
        let metrics = RuntimeMetrics()
        metrics.recordQuotaRefusal(app: orders, quota: "a\"b\\c\nd")
        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        #expect(scrape.text.contains(#"quota="a\"b\\c\nd"} 1"#))
    }

    @Test func concurrentRecordingLosesNothing() async {
        let metrics = RuntimeMetrics()
        let app = orders
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for call in 0..<1000 {
                        metrics.recordRequest(
                            app: app, method: "GetState", transport: task % 2 == 0 ? "grpc" : "http",
                            code: call % 10 == 0 ? .notFound : .ok, duration: .microseconds(call))
                    }
                }
            }
            group.addTask { _ = metrics.render(gauges: RuntimeGauges()) }
        }
        let scrape = Exposition(metrics.render(gauges: RuntimeGauges()))
        let total = scrape.series(of: "hangar_requests_total").compactMap { scrape.samples[$0] }.reduce(0, +)
        #expect(total == 8000)
        let counts = scrape.series(of: "hangar_request_duration_seconds").filter { $0.contains("_count{") }
        #expect(counts.compactMap { scrape.samples[$0] }.reduce(0, +) == 8000)
    }

    @Test func everyCodeHasItsGRPCName() {
        #expect(RPCCode.ok.metricLabel == "OK")
        #expect(RPCCode.resourceExhausted.metricLabel == "RESOURCE_EXHAUSTED")
        #expect(RPCCode.notFound.metricLabel == "NOT_FOUND")
        #expect(RPCCode.internal.metricLabel == "INTERNAL")
        let names = (0...16).compactMap(RPCCode.init(rawValue:)).map(\.metricLabel)
        #expect(Set(names).count == 17)
        #expect(names.allSatisfy { $0.allSatisfy { $0.isUppercase || $0 == "_" } })
    }
}
