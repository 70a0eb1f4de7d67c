import Glibc
import NIOCore
import Synchronization

/// Samples hangard's RSS (`VmRSS`), the attackers' tallies and, when hangard serves them, its buffered-bytes
/// metrics, once per `interval`, labelled with the window the run is in, until `stop()`.
final class OverloadTimeline: Sendable {
    private struct State {
        var window = "start"
        var samples: [OverloadReport.Sample] = []
        var stopped = false
        /// The RSS at which the attack was stopped early, when it went over `rssCapMB`.
        var abortedAtMB: Double?
    }

    private let state = Mutex(State())
    private let pid: pid_t
    private let metricsPort: Int?
    /// Monotonic nanoseconds the samples' `seconds` count from.
    private let origin: UInt64
    private let interval: Duration
    /// Above this RSS the sampler stops the attackers, so that an unbounded hangard does not take the machine.
    private let rssCapMB: Double
    /// The tenants whose `hangar_buffered_bytes` is sampled.
    private let namespaces: [String]

    init(
        pid: pid_t, metricsPort: Int?, origin: UInt64, interval: Duration, rssCapMB: Double, namespaces: [String]
    ) {
        self.namespaces = namespaces
        self.pid = pid
        self.metricsPort = metricsPort
        self.origin = origin
        self.interval = interval
        self.rssCapMB = rssCapMB
    }

    /// The RSS at which the attack was stopped early, if it was.
    var abortedAtMB: Double? { state.withLock { $0.abortedAtMB } }

    /// The window the next samples belong to.
    func enter(_ window: String) {
        state.withLock { $0.window = window }
    }

    func stop() {
        state.withLock { $0.stopped = true }
    }

    var samples: [OverloadReport.Sample] { state.withLock { $0.samples } }

    /// Samples until `stop()` (or cancellation); `attackers()` gives the attackers of the moment.
    func run(attackers: @Sendable () -> [OverloadAttacker]) async {
        var next = ContinuousClock.now
        while !state.withLock({ $0.stopped }) && !Task.isCancelled {
            await sample(attackers())
            next += interval
            try? await Task.sleep(until: next)
        }
    }

    private func sample(_ attackers: [OverloadAttacker]) async {
        guard let process = ProcessSample.readProcFile("/proc/\(pid)/status"),
            let rssKiB = ProcessSample.statusValue(process, "VmRSS")
        else { return }
        let seconds = Double(NIODeadline.now().uptimeNanoseconds - origin) / 1_000_000_000
        var tallies: [AttackTally] = []
        for attacker in attackers {
            if let tally = try? await attacker.tally() { tallies.append(tally) }
        }
        let attack = AttackTally.merged(tallies)
        var nodeBufferedMB: Double?
        var overloadLevel: Double?
        var tenantBufferedMB: [String: Double]?
        var shed: Double?
        var refused: Double?
        if let metricsPort, let exposition = MetricsScrape.get(port: metricsPort, path: "/metrics") {
            nodeBufferedMB = MetricsScrape.value(exposition, "hangar_node_buffered_bytes").map { $0 / 1_000_000 }
            overloadLevel = MetricsScrape.value(exposition, "hangar_overload_level")
            shed = MetricsScrape.value(exposition, "hangar_overload_shed_connections_total")
            refused = MetricsScrape.value(exposition, "hangar_overload_refused_connections_total")
            for namespace in namespaces {
                if let bytes = MetricsScrape.value(
                    exposition, "hangar_buffered_bytes", labels: "{namespace=\"\(namespace)\"}")
                {
                    tenantBufferedMB = tenantBufferedMB ?? [:]
                    tenantBufferedMB?[namespace] = bytes / 1_000_000
                }
            }
        }
        let rssMB = Double(rssKiB) * 1024 / 1_000_000
        if rssMB > rssCapMB, !attackers.isEmpty, state.withLock({ $0.abortedAtMB == nil }) {
            state.withLock { $0.abortedAtMB = rssMB }
            TextTable.progress("hangard's RSS is \(TextTable.format(rssMB, 0)) MB, over --rss-cap: stopping the attack")
            for attacker in attackers { _ = try? await attacker.stop() }
        }
        state.withLock { state in
            state.samples.append(
                OverloadReport.Sample(
                    seconds: seconds, window: state.window, rssMB: rssMB,
                    attackHeldMB: Double(attack.bytesHeld) / 1_000_000, attackStreamsOpen: attack.streamsOpen,
                    nodeBufferedMB: nodeBufferedMB, overloadLevel: overloadLevel, tenantBufferedMB: tenantBufferedMB,
                    shedConnections: shed, refusedConnections: refused))
        }
    }
}
