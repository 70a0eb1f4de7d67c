/// What `hangar-bench sidecar` measured, as written by `--json` and printed as a table: the same paced workload
/// served by one hangard for every app (`node`) and by one hangard per app (`sidecar`).
struct SidecarReport: Codable, Sendable {
    struct Options: Codable, Sendable {
        var apps: Int
        /// Calls a second each app's caller makes, alternating GetState and SaveState.
        var ratePerApp: Double
        var store: String
        var durationSeconds: Double
        var warmupSeconds: Double
        var keys: Int
        var valueBytes: Int
        var resources: String
        var sidecarResources: String?
        var connectionsCommand: String?
    }

    /// One model over its measured window; memory and CPU are summed over its processes.
    struct Model: Codable, Sendable {
        /// `node` or `sidecar`.
        var name: String
        var processes: Int
        /// Seconds from the first spawn to the last "hangard ready".
        var secondsToStart: Double
        /// Before any connection (1 s after ready), and at the end of the window.
        var idle: MemoryReport.Footprint
        var loaded: MemoryReport.Footprint
        /// CPU (utime + stime from `/proc/<pid>/stat`) over the window, in cores, and per call answered.
        var cores: Double
        var cpuMicrosPerCall: Double
        var traffic: PacedTraffic
        /// The bench's own CPU, and everything else on the machine, in cores; the hypervisor's steal.
        var benchCores: Double
        var otherCores: Double?
        var stealPercent: Double?
        /// The backend server's connections through the model (`--connections-command`), and its CPU over the
        /// window (`--backend-pid`), in cores and per call answered.
        var backendConnections: ConnectionCounts?
        var backendCores: Double?
        var backendCPUMicrosPerCall: Double?
        /// Monotonic nanoseconds when the measured window began.
        var measuredFrom: UInt64?
    }

    var date: String
    var command: String
    var machine: BenchReport.Machine
    var options: Options
    var models: [Model] = []
    /// sidecar ÷ node: summed RSS and PSS at the end of the window, and CPU per call.
    var rssRatio: Double?
    var pssRatio: Double?
    var cpuRatio: Double?
    /// node ÷ sidecar: the backend's connections, at their peak and steady (the median count within the window).
    var connectionsPeakRatio: Double?
    var connectionsSteadyRatio: Double?
    var goals: [BenchReport.TargetCheck] = []

    /// Derives the ratios and checks the two goals (reported, never failing the command).
    mutating func evaluate() {
        goals = []
        guard let node = models.first(where: { $0.name == "node" }),
            let sidecar = models.first(where: { $0.name == "sidecar" })
        else { return }
        func ratio(_ value: (Model) -> Double) -> Double? { value(node) > 0 ? value(sidecar) / value(node) : nil }
        rssRatio = ratio(\.loaded.rssMB)
        pssRatio = ratio(\.loaded.pssMB)
        cpuRatio = ratio(\.cpuMicrosPerCall)
        if let rssRatio {
            goals.append(
                BenchReport.TargetCheck(
                    name: "memory, sidecars ÷ node (RSS summed)", target: ">= 20", measured: rssRatio, unit: "×",
                    met: rssRatio >= 20))
        }
        if let cpuRatio {
            goals.append(
                BenchReport.TargetCheck(
                    name: "CPU per call, sidecars ÷ node", target: ">= 3", measured: cpuRatio, unit: "×",
                    met: cpuRatio >= 3))
        }
        if let nodeCounts = node.backendConnections, let sidecarCounts = sidecar.backendConnections,
            sidecarCounts.peak > 0
        {
            connectionsPeakRatio = Double(nodeCounts.peak) / Double(sidecarCounts.peak)
            if let nodeSteady = nodeCounts.steadyMedian, let sidecarSteady = sidecarCounts.steadyMedian,
                sidecarSteady > 0
            {
                connectionsSteadyRatio = Double(nodeSteady) / Double(sidecarSteady)
            }
            goals.append(
                BenchReport.TargetCheck(
                    name: "backend connections at their peak, node ÷ sidecars", target: "<= 0.05",
                    measured: connectionsPeakRatio!, unit: "×", met: connectionsPeakRatio! <= 0.05))
        }
    }

    /// The report as text for a terminal and for BENCHMARKS.md.
    func render() -> String {
        let format = TextTable.format
        var lines = [
            "hangar-bench sidecar \(date) — \(machine.cores) cores, \(machine.cpuModel), Linux \(machine.kernel)",
            "\(options.apps) apps, each one paced caller at \(format(options.ratePerApp, 0)) calls/s alternating "
                + "GetState and SaveState on \(options.store) over gRPC; \(seconds(options.warmupSeconds)) s "
                + "warm-up, \(seconds(options.durationSeconds)) s measured per model",
            "node: one hangard declaring every app; sidecar: one hangard per app, each with its own tenancy, "
                + "resources, socket root and data directory. Memory and CPU summed over the model's processes; "
                + "MB = 10^6 bytes",
            "",
        ]
        var rows = [
            [
                "model", "processes", "start s", "idle RSS MB", "idle PSS MB", "RSS MB", "PSS MB", "USS MB", "threads",
                "cores", "CPU µs/call", "calls/s", "p50 µs", "p99 µs", "max µs", "errors", "bench cores",
                "other load", "steal %",
            ]
        ]
        for model in models {
            rows.append([
                model.name, "\(model.processes)", format(model.secondsToStart, 2), format(model.idle.rssMB, 1),
                format(model.idle.pssMB, 1), format(model.loaded.rssMB, 1), format(model.loaded.pssMB, 1),
                format(model.loaded.ussMB, 1), "\(model.loaded.threads)", format(model.cores, 3),
                format(model.cpuMicrosPerCall, 1), format(model.traffic.okPerSecond, 0),
                format(model.traffic.latency.p50, 1), format(model.traffic.latency.p99, 1),
                format(model.traffic.latency.max, 1), "\(model.traffic.errors)", format(model.benchCores, 3),
                model.otherCores.map { format($0, 2) } ?? "-", model.stealPercent.map { format($0, 1) } ?? "-",
            ])
        }
        lines += TextTable.align(rows)
        if models.contains(where: { $0.backendConnections != nil || $0.backendCores != nil }) {
            lines.append("")
            lines.append(
                "backend server: connections (\(options.connectionsCommand ?? "no --connections-command")) and CPU")
            var backendRows = [
                [
                    "model", "before load", "peak", "steady (median)", "last", "counts", "server cores",
                    "server CPU µs/call",
                ]
            ]
            for model in models {
                let counts = model.backendConnections
                backendRows.append([
                    model.name, counts?.beforeLoad.map(String.init) ?? "-", counts.map { "\($0.peak)" } ?? "-",
                    counts?.steadyMedian.map(String.init) ?? "-", counts.map { "\($0.last)" } ?? "-",
                    counts.map { "\($0.samples)" } ?? "-", model.backendCores.map { format($0, 3) } ?? "-",
                    model.backendCPUMicrosPerCall.map { format($0, 1) } ?? "-",
                ])
            }
            lines += TextTable.align(backendRows)
            for model in models {
                if let error = model.backendConnections?.firstError {
                    lines.append("  \(model.name): connections command: \(error)")
                }
            }
        }
        for model in models {
            if let error = model.traffic.firstError ?? model.traffic.firstRefusal {
                lines.append("  \(model.name): first error: \(error)")
            }
            if model.traffic.unanswered > 0 {
                lines.append(
                    "  \(model.name): \(model.traffic.unanswered) calls unanswered 5 s after the window (the client "
                        + "or the server could not keep up)")
            }
        }
        if models.contains(where: { ($0.otherCores ?? 0) > 0.1 }) {
            lines.append(
                "  note: other processes kept more than 0.1 cores busy in a model's window (column 'other load', in "
                    + "cores): those numbers are disturbed on this 2-core machine")
        }
        if !goals.isEmpty {
            lines.append("")
            lines.append("goals (reported, not enforced):")
            for goal in goals { lines.append(TextTable.goal(goal, decimals: goal.measured < 1 ? 3 : 1)) }
            if let connectionsSteadyRatio {
                lines.append(
                    "  info   backend connections steady (median in the window), node ÷ sidecars: "
                        + "\(format(connectionsSteadyRatio, 3)) ×")
            }
            if let pssRatio {
                lines.append(
                    "  info   memory, sidecars ÷ node (PSS summed: shared pages counted once): \(format(pssRatio, 1)) ×"
                )
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Whole seconds without decimals, others with one.
    private func seconds(_ value: Double) -> String {
        TextTable.format(value, value == value.rounded() ? 0 : 1)
    }
}
