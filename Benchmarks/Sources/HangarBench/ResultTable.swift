import Foundation

/// The report as text for a terminal (and for pasting into BENCHMARKS.md).
enum ResultTable {
    static func render(_ report: BenchReport) -> String {
        var lines: [String] = []
        let machine = report.machine
        lines.append(
            "hangar-bench \(report.date) — \(machine.cores) cores, \(machine.cpuModel), Linux \(machine.kernel); "
                + "\(report.options.rounds) round(s), each phase shown from its median round")
        if let daemon = report.daemon { lines.append(describe("hangard", daemon)) }
        if let echo = report.echo { lines.append(describe("echo server", echo)) }
        if !report.phases.isEmpty {
            lines.append("")
            lines += phaseTable(report.phases)
        }
        let disturbed = report.phases.filter { ($0.otherBusyCores ?? 0) > 0.1 }
        if !disturbed.isEmpty {
            lines.append(
                "  note: other processes kept more than 0.1 cores busy during \(disturbed.count) phase(s) "
                    + "(column 'other load', in cores): those numbers are disturbed on this 2-core machine")
        }
        for phase in report.phases where phase.errors > 0 {
            lines.append("  \(phase.server) \(phase.label): first error: \(phase.firstError ?? "?")")
        }

        lines += invocationLines(report.invocation ?? [])
        if let phases = report.streamPhases, !phases.isEmpty {
            lines.append("")
            lines.append("stream phases (every round):")
            lines += StreamingSummary.table(phases)
        }
        lines += report.streaming?.lines ?? []
        lines += report.pubsub?.lines ?? []
        lines += report.memory?.lines ?? []

        if !report.targets.isEmpty {
            lines.append("")
            lines.append("targets:")
            for target in report.targets {
                let verdict = target.met ? "met   " : "MISSED"
                let decimals = target.unit == "×" ? 2 : 1
                let spread =
                    target.range.map { " (rounds \(format($0[0], decimals))–\(format($0[1], decimals)))" } ?? ""
                lines.append(
                    "  \(verdict) \(target.name): \(format(target.measured, decimals)) \(target.unit)\(spread) "
                        + "(target \(target.target) \(target.unit))")
            }
        }
        lines.append(contentsOf: sidecarComparison(report))
        return lines.joined(separator: "\n")
    }

    /// One row per phase.
    private static func phaseTable(_ phases: [PhaseResult]) -> [String] {
        let header = [
            "server", "operation", "store", "api", "mode", "callers", "apps", "conns", "calls", "calls/s", "p50 µs",
            "p90 µs", "p99 µs", "p99.9 µs", "server CPU µs/call", "(rounds min–max)", "server cs/call",
            "client CPU µs/call", "other load", "steal %", "errors",
        ]
        var rows = [header]
        for phase in phases {
            rows.append([
                phase.server, phase.operation, phase.store ?? "-", phase.api.rawValue, phase.mode, "\(phase.callers)",
                phase.apps.map(String.init) ?? "-", "\(phase.connections)",
                "\(phase.calls)", format(phase.callsPerSecond, 0), format(phase.latency.p50, 1),
                format(phase.latency.p90, 1), format(phase.latency.p99, 1), format(phase.latency.p999, 1),
                format(phase.serverCPUMicrosPerCall, 1),
                phase.serverCPUMicrosPerCallRange.map { "\(format($0[0], 1))–\(format($0[1], 1))" } ?? "-",
                format(phase.serverContextSwitchesPerCall, 2),
                format(phase.clientCPUMicrosPerCall, 1), phase.otherBusyCores.map { format($0, 2) } ?? "-",
                phase.stealPercent.map { format($0, 1) } ?? "-", "\(phase.errors)",
            ])
        }
        return align(rows, leftColumns: 5)
    }

    private static func describe(_ name: String, _ server: BenchReport.ServerProcess) -> String {
        var text =
            "\(name): ready in \(format(server.secondsToReady, 2)) s; RSS idle \(format(server.idleRSSMB, 1)) MB "
            + "(anon \(format(server.idleAnonymousRSSMB, 1)) + file \(format(server.idleFileRSSMB, 1)); \(server.idleThreads) threads)"
        if server.apps > 1 { text += ", \(server.apps) apps declared" }
        text += "; connected \(format(server.connectedRSSMB, 1)) MB"
        if let after = server.afterLoadRSSMB, let peak = server.peakRSSMB {
            text += "; after load \(format(after, 1)) MB (peak \(format(peak, 1)) MB)"
        }
        if let seconds = server.shutdownSeconds {
            text += "; SIGTERM → exit \(server.exitStatus.map(String.init) ?? "killed") in \(format(seconds, 2)) s"
        }
        return text
    }

    /// Service invocation's added latency and CPU, beside GetState's from the same rounds.
    private static func invocationLines(_ overheads: [InvocationOverhead]) -> [String] {
        guard !overheads.isEmpty else { return [] }
        var lines = [
            "",
            "service invocation: app → hangard → echo server (InvokeService) against app → echo server "
                + "(OnInvoke), paired per round, medians over \(overheads[0].rounds) round(s):",
        ]
        for overhead in overheads {
            func figure(_ figure: InvocationOverhead.Figure) -> String { format(figure.median, 1) }
            func ratio(_ figure: InvocationOverhead.Figure) -> String {
                format(figure.median, 2) + "×"
                    + (figure.range.map { " (rounds \(format($0[0], 2))–\(format($0[1], 2)))" } ?? "")
            }
            let direct = "direct p50 \(figure(overhead.directP50)) / p99 \(figure(overhead.directP99)) µs"
            let through = "p50 \(figure(overhead.throughP50)) / p99 \(figure(overhead.throughP99)) µs"
            lines.append("  \(overhead.callersLabel): \(direct); through hangard \(through)")
            let addedP50 = signed(overhead.addedP50.median)
            let addedP99 = signed(overhead.addedP99.median)
            let getP50 = figure(overhead.getStateP50)
            let getP99 = figure(overhead.getStateP99)
            lines.append(
                "    added p50 \(addedP50) µs = \(ratio(overhead.addedP50Ratio)) GetState's p50 (\(getP50) µs); "
                    + "added p99 \(addedP99) µs = \(ratio(overhead.addedP99Ratio)) GetState's p99 (\(getP99) µs)")
            let perInvocation = figure(overhead.hangardCPUPerInvocation)
            let perGet = figure(overhead.hangardCPUPerGetState)
            let echoDirect = figure(overhead.echoCPUDirect)
            let echoThrough = overhead.echoCPUThrough.map(figure) ?? "-"
            lines.append(
                "    hangard CPU \(perInvocation) µs per invocation = \(ratio(overhead.cpuRatio)) its \(perGet) µs "
                    + "per GetState; echo server CPU \(echoDirect) µs per direct call, \(echoThrough) µs per call "
                    + "through hangard")
        }
        return lines
    }

    /// Hangar next to the published per-sidecar figures of Dapr (different workload and machine: orders of
    /// magnitude only).
    private static func sidecarComparison(_ report: BenchReport) -> [String] {
        var lines = [
            "",
            "against Dapr's published sidecar anchors (~0.2 vCPU and ~51 MB per 1000 req/s; +1.06 ms p50 / +2.90 ms p99 per call):",
        ]
        for phase in report.phases where phase.server == "hangard" && phase.mode == "concurrent" {
            let vCPU = phase.serverCPUMicrosPerCall / 1000
            lines.append("  \(phase.label): \(format(vCPU, 3)) vCPU per 1000 req/s")
        }
        if let daemon = report.daemon {
            lines.append(
                "  memory: one hangard serving \(daemon.apps) connected apps: \(format(daemon.afterLoadRSSMB ?? daemon.connectedRSSMB, 1)) MB"
            )
        }
        if let get = report.phase(server: "hangard", operation: "GetState", store: "memstore", mode: "sequential"),
            let echo = report.phase(server: "echo", operation: "Echo", store: nil, mode: "sequential")
        {
            lines.append(
                "  latency over the bare echo server (1 caller): \(signed(get.latency.p50 - echo.latency.p50)) µs p50, "
                    + "\(signed(get.latency.p99 - echo.latency.p99)) µs p99 (GetState in-memory)")
        }
        for overhead in report.invocation ?? [] {
            lines.append(
                "  service invocation added (\(overhead.callersLabel)): \(signed(overhead.addedP50.median)) µs p50, "
                    + "\(signed(overhead.addedP99.median)) µs p99 (Dapr: +1060 µs p50, +2900 µs p99)")
        }
        return lines.count > 2 ? lines : []
    }

    private static func align(_ rows: [[String]], leftColumns: Int) -> [String] {
        TextTable.align(rows, leftColumns: leftColumns)
    }

    private static func format(_ value: Double, _ decimals: Int) -> String { TextTable.format(value, decimals) }

    private static func signed(_ value: Double) -> String { TextTable.signed(value, 1) }
}
