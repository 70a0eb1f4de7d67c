import Foundation

/// What `hangar-bench overload` measured, as written by `--json` and printed as a table: one `Run` per attack
/// shape, each on a hangard of its own.
struct OverloadReport: Codable, Sendable {
    struct Options: Codable, Sendable {
        var attackers: Int
        var messageBytes: Int
        var holdBack: Int
        var trickleIntervalSeconds: Double
        var trickleBytes: Int? = 1
        var reopenDelaySeconds: Double
        var quietRate: Double
        var quietConnections: Int
        var store: String
        var quietSeconds: Double
        var rampSeconds: Double
        var heldSeconds: Double
        var afterSeconds: Double
        var warmupSeconds: Double
        /// hangard's `--max-buffered-bytes` when the bench passed one; nil: hangard's default.
        var maxBufferedBytes: Int?
        /// The container's memory limit RSS is checked against, and the growth over the baseline the issue allows.
        var memoryLimitMiB: Int
        var rssGrowthBudgetMB: Double
    }

    /// The quiet tenant's calls in one window, and the machine meanwhile.
    struct Window: Codable, Sendable {
        /// `quiet` (before the attack), `ramp` (the attack's first seconds, while its bytes go out), `held` (the
        /// attack holding what it got), `after` (the attackers gone).
        var name: String
        var seconds: Double
        var quiet: PacedTraffic
        /// hangard's CPU over the window, in cores; the bench's own; everything else on the machine.
        var daemonCores: Double
        var benchCores: Double
        var otherCores: Double?
        var stealPercent: Double?
        var rssMBAtEnd: Double
    }

    /// One sample of the timeline (one a second by default).
    struct Sample: Codable, Sendable {
        /// Seconds since hangard was ready.
        var seconds: Double
        var window: String
        var rssMB: Double
        /// What the attackers know they hold (bytes sent on streams hangard has not ended), summed, and their open
        /// streams.
        var attackHeldMB: Double
        var attackStreamsOpen: Int
        /// `hangar_node_buffered_bytes` and `hangar_overload_level` from hangard's `/metrics`, when it has them.
        var nodeBufferedMB: Double?
        var overloadLevel: Double?
        /// `hangar_buffered_bytes{namespace}` per tenant, and the totals of connections shed and refused at accept
        /// for overload, when hangard has them.
        var tenantBufferedMB: [String: Double]?
        var shedConnections: Double?
        var refusedConnections: Double?
    }

    struct Attacker: Codable, Sendable {
        var namespace: String
        var tally: AttackTally
    }

    struct Run: Codable, Sendable {
        var plan: AttackPlan
        var hangardSecondsToReady: Double
        /// RSS in the last second before the attack, the most over the attack and after it, and at the end.
        var baselineRSSMB: Double
        var maxRSSMB: Double
        var endRSSMB: Double
        /// hangard's own peak (`VmHWM`) when the run ended.
        var peakRSSMB: Double
        var windows: [Window] = []
        /// Each attacker's tally when the attack stopped.
        var attackers: [Attacker] = []
        var samples: [Sample] = []
        /// How hangard ended: its exit status after SIGTERM (nil: killed), or the status it died with during the run.
        var hangardExit: String
        /// The RSS at which the bench stopped the attack early (`--rss-cap`), if it did.
        var abortedAtRSSMB: Double?
        /// What a new connection of the quiet tenant got at the end of the `held` window (connect, one GetState).
        var newQuietConnection: String?
        var goals: [BenchReport.TargetCheck] = []

        var maxGrowthMB: Double { maxRSSMB - baselineRSSMB }

        func window(_ name: String) -> Window? { windows.first { $0.name == name } }

        /// Checks the goals (reported, never failing the command).
        mutating func evaluate(options: Options) {
            goals = []
            if let probe = newQuietConnection {
                goals.append(
                    BenchReport.TargetCheck(
                        name: "a new connection of the quiet tenant during the attack answers", target: "1",
                        measured: probe.hasPrefix("OK") ? 1 : 0, unit: "calls", met: probe.hasPrefix("OK")))
            }
            goals.append(
                BenchReport.TargetCheck(
                    name: "RSS growth over the baseline (max \(TextTable.format(maxRSSMB, 0)) MB)",
                    target: "<= \(TextTable.format(options.rssGrowthBudgetMB, 0))", measured: maxGrowthMB, unit: "MB",
                    met: maxGrowthMB <= options.rssGrowthBudgetMB))
            let limitMB = Double(options.memoryLimitMiB) * 1_048_576 / 1_000_000
            goals.append(
                BenchReport.TargetCheck(
                    name: "max RSS under the DaemonSet's memory limit (\(options.memoryLimitMiB) Mi)",
                    target: "<= \(TextTable.format(limitMB, 0))", measured: maxRSSMB, unit: "MB",
                    met: maxRSSMB <= limitMB))
            guard let quiet = window("quiet"), quiet.quiet.latency.p99 > 0 else { return }
            for name in ["ramp", "held"] {
                guard let attacked = window(name) else { continue }
                let ratio = attacked.quiet.latency.p99 / quiet.quiet.latency.p99
                goals.append(
                    BenchReport.TargetCheck(
                        name: "quiet tenant's p99, \(name) / before the attack", target: "<= 1.5", measured: ratio,
                        unit: "×", met: ratio <= 1.5))
                goals.append(
                    BenchReport.TargetCheck(
                        name: "quiet tenant's calls not answered OK, \(name)", target: "0",
                        measured: Double(attacked.quiet.errors), unit: "calls", met: attacked.quiet.errors == 0))
            }
        }
    }

    var date: String
    var command: String
    var machine: BenchReport.Machine
    var options: Options
    var runs: [Run] = []

    /// The report as text for a terminal and for BENCHMARKS.md.
    func render() -> String {
        let format = TextTable.format
        var lines = [
            "hangar-bench overload \(date) — \(machine.cores) cores, \(machine.cpuModel), Linux \(machine.kernel)",
            "\(options.attackers) attacking tenants, each: SaveState streams declaring \(options.messageBytes) bytes, "
                + "all but the last \(options.holdBack) sent, then \(options.trickleBytes ?? 1) byte(s) per stream "
                + "every "
                + "\(format(options.trickleIntervalSeconds, 0)) s; quiet tenant: \(format(options.quietRate, 0)) "
                + "GetState/s on \(options.store) over \(options.quietConnections) connections; windows "
                + "quiet \(format(options.quietSeconds, 0)) s, ramp \(format(options.rampSeconds, 0)) s, "
                + "held \(format(options.heldSeconds, 0)) s, after \(format(options.afterSeconds, 0)) s; "
                + "hangard --max-buffered-bytes "
                + (options.maxBufferedBytes.map { "\($0)" } ?? "default") + ", no quotas set",
        ]
        for run in runs {
            let plan = run.plan
            lines.append("")
            lines.append(
                "shape '\(plan.name)': \(plan.streams) streams over \(plan.connections) connections per attacker"
                    + (plan.reopen ? ", reopened \(format(plan.reopenDelay, 2)) s after hangard ends one" : "")
                    + "; hangard RSS baseline \(format(run.baselineRSSMB, 1)) MB, max \(format(run.maxRSSMB, 1)) MB "
                    + "(+\(format(run.maxGrowthMB, 1))), end \(format(run.endRSSMB, 1)) MB, peak (VmHWM) "
                    + "\(format(run.peakRSSMB, 1)) MB; hangard \(run.hangardExit)")
            if let aborted = run.abortedAtRSSMB {
                lines.append(
                    "  the bench stopped the attack early: hangard's RSS reached \(format(aborted, 0)) MB (--rss-cap)")
            }
            var rows = [
                [
                    "window", "quiet calls/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs", "errors",
                    "p99 / quiet", "RSS MB", "hangard cores", "bench cores", "other load",
                ]
            ]
            let reference = run.window("quiet")?.quiet.latency.p99 ?? 0
            for window in run.windows {
                let latency = window.quiet.latency
                rows.append([
                    window.name, format(window.quiet.okPerSecond, 0), format(latency.p50, 1), format(latency.p90, 1),
                    format(latency.p99, 1), format(latency.p999, 1), format(latency.max, 1), "\(window.quiet.errors)",
                    reference > 0 ? format(latency.p99 / reference, 2) : "-", format(window.rssMBAtEnd, 1),
                    format(window.daemonCores, 3), format(window.benchCores, 3),
                    window.otherCores.map { format($0, 2) } ?? "-",
                ])
            }
            lines += TextTable.align(rows).map { "  " + $0 }
            if let probe = run.newQuietConnection {
                lines.append("  a new connection of the quiet tenant at the end of 'held': \(probe)")
            }
            for window in run.windows {
                if let error = window.quiet.firstError ?? window.quiet.firstRefusal {
                    lines.append("  \(window.name): quiet tenant's first error: \(error)")
                }
            }
            var attackRows = [
                [
                    "attacker", "conns", "conn refused", "closed by hangard", "GOAWAY", "streams", "refused (8)",
                    "other status", "reset", "lost w/ conn", "sent MB", "held at end MB", "streams held", "trickles",
                ]
            ]
            for attacker in run.attackers {
                let tally = attacker.tally
                attackRows.append([
                    attacker.namespace, "\(tally.connectionsOpened)", "\(tally.connectFailures)",
                    "\(tally.connectionsClosedByServer)", Self.counts(tally.goAways), "\(tally.streamsOpened)",
                    "\(tally.refused)", Self.counts(tally.otherStatuses), Self.counts(tally.resets),
                    "\(tally.lostWithConnection)", format(Double(tally.bytesAccepted) / 1_000_000, 1),
                    format(Double(tally.bytesHeld) / 1_000_000, 1), "\(tally.streamsOpen)",
                    "\(tally.tricklesAccepted)/\(tally.trickles)",
                ])
            }
            lines += TextTable.align(attackRows).map { "  " + $0 }
            for attacker in run.attackers {
                if let refusal = attacker.tally.firstRefusal {
                    lines.append("  \(attacker.namespace): first refusal: \(refusal)")
                }
                if let other = attacker.tally.firstOtherEnd {
                    lines.append("  \(attacker.namespace): first other end: \(other)")
                }
            }
            if let counters = overloadCounters(run.samples) { lines.append("  " + counters) }
            lines.append("  timeline, one sample a second (RSS MB / attackers' held MB / hangard's counted MB):")
            lines += timeline(run.samples).map { "    " + $0 }
            if run.windows.contains(where: { ($0.otherCores ?? 0) > 0.1 }) {
                lines.append(
                    "  note: other processes kept more than 0.1 cores busy in a window (column 'other load'): "
                        + "latencies are disturbed on this 2-core machine")
            }
            lines.append("  goals (reported, not enforced):")
            for goal in run.goals { lines.append("  " + TextTable.goal(goal, decimals: goal.unit == "×" ? 2 : 1)) }
        }
        return lines.joined(separator: "\n")
    }

    /// What hangard's metrics said: the most each tenant had counted, and the connections shed and refused.
    private func overloadCounters(_ samples: [Sample]) -> String? {
        var most: [String: Double] = [:]
        for sample in samples {
            for (namespace, megabytes) in sample.tenantBufferedMB ?? [:] {
                most[namespace] = max(most[namespace] ?? 0, megabytes)
            }
        }
        let node = samples.compactMap(\.nodeBufferedMB).max()
        guard let node else { return nil }
        let tenants = most.sorted { $0.key < $1.key }.map { "\($0.key) \(TextTable.format($0.value, 1))" }
        return "hangard's counted buffered MB, most at once: node \(TextTable.format(node, 1))"
            + (tenants.isEmpty ? "" : ", " + tenants.joined(separator: ", "))
            + "; connections shed \(TextTable.format(samples.compactMap(\.shedConnections).max() ?? 0, 0)), "
            + "refused at accept \(TextTable.format(samples.compactMap(\.refusedConnections).max() ?? 0, 0))"
    }

    /// `a×3 b×1`, or `-`.
    private static func counts(_ counts: [String: Int]) -> String {
        counts.isEmpty ? "-" : counts.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " ")
    }

    /// One line per window: its samples as `rss/held[/counted]`.
    private func timeline(_ samples: [Sample]) -> [String] {
        var lines: [String] = []
        var current: (name: String, cells: [String])?
        for sample in samples {
            var cell = "\(TextTable.format(sample.rssMB, 0))/\(TextTable.format(sample.attackHeldMB, 0))"
            if let counted = sample.nodeBufferedMB { cell += "/\(TextTable.format(counted, 0))" }
            if current?.name != sample.window {
                if let current { lines.append("\(current.name): " + current.cells.joined(separator: " ")) }
                current = (sample.window, [])
            }
            current?.cells.append(cell)
        }
        if let current { lines.append("\(current.name): " + current.cells.joined(separator: " ")) }
        return lines
    }
}
