/// What `hangar-bench noisy-neighbour` measured, as written by `--json` and printed as a table.
struct NoisyNeighbourReport: Codable, Sendable {
    struct Options: Codable, Sendable {
        /// The noisy tenant's `requestsPerSecond` (Q) and `burst`.
        var quota: Int
        var burst: Int
        var floodFactor: Int
        /// What the noisy tenant offers: floodFactor × Q calls a second.
        var floodRate: Double
        var floodConnections: Int
        var floodOperation: String
        var floodThreads: Int
        var steadyRate: Double
        var steadyConnections: Int
        var steadyOperation: String
        var store: String
        var durationSeconds: Double
        var warmupSeconds: Double
        var floodLeadSeconds: Double
        var keys: Int
        var valueBytes: Int
        /// RST_STREAM frames a flood connection tolerates per 30 s (swift-nio-http2's default is 200).
        var clientResetLimit: Int
    }

    /// One tenant's calls in the measured window of a phase.
    typealias Traffic = PacedTraffic

    /// One phase: `quiet` (the steady tenant alone) or `noisy` (with the flood).
    struct Phase: Codable, Sendable {
        var name: String
        /// The measured window, in seconds.
        var seconds: Double
        var steady: Traffic
        var flood: Traffic?
        /// The flood's OK calls a second over its quota Q.
        var acceptedOverQuota: Double?
        /// hangard's CPU time over the window (`/proc/<pid>/stat`), in cores, and per call answered (both tenants,
        /// refusals included).
        var daemonCores: Double
        var daemonMicrosPerCall: Double
        var daemonContextSwitchesPerCall: Double
        var daemonRSSMB: Double
        /// Time hangard's threads, and the bench's, sat runnable but waiting for a CPU
        /// (`/proc/<pid>/task/*/schedstat`), summed over their threads, per call answered, in microseconds: what
        /// sharing two cores costs.
        var daemonRunQueueMicrosPerCall: Double
        var benchRunQueueMicrosPerCall: Double
        /// The bench's own CPU (client event loops, timers, sampling), in cores.
        var benchCores: Double
        /// Everything else that ran on the machine meanwhile, in cores, and the hypervisor's steal.
        var otherCores: Double?
        var stealPercent: Double?
    }

    var date: String
    var command: String
    var machine: BenchReport.Machine
    var options: Options
    var hangardSecondsToReady: Double
    var phases: [Phase] = []
    /// hangard's extra CPU in the noisy phase over the quiet one, per call of the flood (refused or not), in
    /// microseconds: what a flooding tenant costs the node per call it offers.
    var floodDaemonMicrosPerCall: Double?
    var goals: [BenchReport.TargetCheck] = []

    /// Derives the flood's cost per call and checks the scenario's two goals (reported, never failing the command).
    mutating func evaluate() {
        goals = []
        floodDaemonMicrosPerCall = nil
        guard let quiet = phases.first(where: { $0.name == "quiet" }),
            let noisy = phases.first(where: { $0.name == "noisy" })
        else { return }
        if let flood = noisy.flood, flood.offeredPerSecond > 0 {
            floodDaemonMicrosPerCall = (noisy.daemonCores - quiet.daemonCores) * 1_000_000 / flood.offeredPerSecond
        }
        if quiet.steady.latency.p99 > 0 {
            let ratio = noisy.steady.latency.p99 / quiet.steady.latency.p99
            goals.append(
                BenchReport.TargetCheck(
                    name: "steady tenant's p99 with the flood / without", target: "<= 1.5", measured: ratio,
                    unit: "×", met: ratio <= 1.5))
        }
        if let flood = noisy.flood {
            let quota = Double(options.quota)
            goals.append(
                BenchReport.TargetCheck(
                    name: "noisy tenant's accepted calls/s (quota \(options.quota))",
                    target: "\(TextTable.format(quota * 0.9, 0))–\(TextTable.format(quota * 1.1, 0))",
                    measured: flood.okPerSecond, unit: "calls/s", met: abs(flood.okPerSecond - quota) <= quota * 0.1))
        }
    }

    /// The report as text for a terminal and for BENCHMARKS.md.
    func render() -> String {
        let format = TextTable.format
        var lines = [
            "hangar-bench noisy-neighbour \(date) — \(machine.cores) cores, \(machine.cpuModel), "
                + "Linux \(machine.kernel)",
            "noisy tenant: quota \(options.quota) calls/s (burst \(options.burst)), offers "
                + "\(format(options.floodRate, 0)) calls/s of \(options.floodOperation) on \(options.store) over "
                + "\(options.floodConnections) connections (from \(format(options.floodLeadSeconds, 0)) s before "
                + "the window); steady tenant: \(format(options.steadyRate, 0)) calls/s of \(options.steadyOperation) "
                + "on \(options.store) over \(options.steadyConnections) connections; "
                + "\(format(options.durationSeconds, 0)) s measured per phase",
            "",
        ]
        var rows = [
            [
                "phase", "steady calls/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "errors",
                "flood offered/s", "accepted/s", "accepted/Q", "refused/s", "other errors", "hangard cores",
                "hangard µs/call", "bench cores", "other load", "steal %",
            ]
        ]
        for phase in phases {
            let steady = phase.steady
            rows.append(
                [
                    phase.name, format(steady.okPerSecond, 0), format(steady.latency.p50, 1),
                    format(steady.latency.p90, 1), format(steady.latency.p99, 1), format(steady.latency.p999, 1),
                    format(steady.latency.max, 1), "\(steady.errors)",
                    phase.flood.map { format($0.offeredPerSecond, 0) } ?? "-",
                    phase.flood.map { format($0.okPerSecond, 1) } ?? "-",
                    phase.acceptedOverQuota.map { format($0, 3) } ?? "-",
                    phase.flood.map { format($0.refusedPerSecond, 0) } ?? "-",
                    phase.flood.map { "\($0.failed + $0.unanswered)" } ?? "-",
                    format(phase.daemonCores, 3), format(phase.daemonMicrosPerCall, 1), format(phase.benchCores, 3),
                    phase.otherCores.map { format($0, 2) } ?? "-", phase.stealPercent.map { format($0, 1) } ?? "-",
                ])
        }
        lines += TextTable.align(rows)
        for phase in phases {
            var lag = "  \(phase.name): client issue lag p99 steady \(format(phase.steady.issueLag.p99, 0)) µs"
            if let flood = phase.flood { lag += ", flood \(format(flood.issueLag.p99, 0)) µs" }
            lag += "; waiting for a CPU: hangard \(format(phase.daemonRunQueueMicrosPerCall, 1)) µs/call, "
            lag += "bench \(format(phase.benchRunQueueMicrosPerCall, 1)) µs/call; "
            lag += "hangard \(format(phase.daemonContextSwitchesPerCall, 2)) cs/call, "
            lag += "RSS \(format(phase.daemonRSSMB, 1)) MB"
            lines.append(lag)
            if let error = phase.steady.firstError ?? phase.steady.firstRefusal {
                lines.append("  \(phase.name): steady tenant's first error: \(error)")
            }
            if let error = phase.flood?.firstError {
                lines.append("  \(phase.name): flood's first error other than a refusal: \(error)")
            }
        }
        if let floodDaemonMicrosPerCall {
            lines.append(
                "  hangard's extra CPU with the flood: \(format(floodDaemonMicrosPerCall, 1)) µs per flood call "
                    + "offered ((noisy − quiet cores) ÷ flood calls/s)")
        }
        if phases.contains(where: { ($0.otherCores ?? 0) > 0.1 }) {
            lines.append(
                "  note: other processes kept more than 0.1 cores busy in a phase (column 'other load', in cores): "
                    + "those numbers are disturbed on this 2-core machine")
        }
        if !goals.isEmpty {
            lines.append("")
            lines.append("goals (reported, not enforced):")
            for goal in goals { lines.append(TextTable.goal(goal, decimals: goal.unit == "×" ? 2 : 1)) }
        }
        return lines.joined(separator: "\n")
    }
}
