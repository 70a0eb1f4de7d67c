/// Two `run` reports side by side: every phase found in both, matched by (server, operation, store, mode,
/// callers, transport), and hangard's memory. A change counts as beyond noise when it exceeds the larger of
/// `minimumNoisePercent` and the baseline's own spread (max − min over its rounds, relative to its value).
struct BenchComparison: Codable, Sendable {
    /// Below this, a change is noise whatever the baseline's rounds say.
    static let minimumNoisePercent = 15.0

    /// One measure of one subject (a phase, or hangard's memory).
    struct Row: Codable, Sendable {
        var subject: String
        var measure: String
        var baseline: Double
        var current: Double
        /// (current − baseline) ÷ baseline, in percent; nil when the baseline is 0.
        var changePercent: Double?
        /// The threshold the change is held against, in percent.
        var noisePercent: Double
        var higherIsBetter: Bool

        var beyondNoise: Bool { abs(changePercent ?? 0) > noisePercent }

        /// `better`, `WORSE`, `within noise`, or `n/a` without a baseline to divide by.
        var verdict: String {
            guard let changePercent else { return "n/a" }
            guard beyondNoise else { return "within noise" }
            return (changePercent > 0) == higherIsBetter ? "better" : "WORSE"
        }
    }

    var baseline: String
    var current: String
    var rows: [Row] = []
    /// Phases present in one report only.
    var onlyInBaseline: [String] = []
    var onlyInCurrent: [String] = []
    /// Options that differ between the runs.
    var notes: [String] = []

    /// What identifies a phase across runs.
    private struct PhaseKey: Hashable {
        var server: String
        var operation: String
        var store: String?
        var mode: String
        var callers: Int
        var transport: BenchTransport

        init(_ phase: PhaseResult) {
            server = phase.server
            operation = phase.operation
            store = phase.store
            mode = phase.mode
            callers = phase.callers
            transport = phase.api
        }
    }

    /// The measures compared per phase, and whether more is better.
    private static let phaseMeasures: [(name: String, value: @Sendable (PhaseResult) -> Double, higherIsBetter: Bool)] =
        [
            ("server CPU µs/call", { $0.serverCPUMicrosPerCall }, false),
            ("p50 µs", { $0.latency.p50 }, false),
            ("p99 µs", { $0.latency.p99 }, false),
            ("calls/s", { $0.callsPerSecond }, true),
            ("server RSS MB (end of phase)", { $0.serverRSSMB }, false),
        ]

    init(baseline: BenchReport, current: BenchReport) {
        self.baseline = "\(baseline.date) (\(baseline.command))"
        self.current = "\(current.date) (\(current.command))"
        let baselineByKey = Dictionary(
            baseline.phases.map { (PhaseKey($0), $0) }, uniquingKeysWith: { first, _ in first })
        let currentKeys = Set(current.phases.map(PhaseKey.init))
        for phase in current.phases {
            let key = PhaseKey(phase)
            guard let old = baselineByKey[key] else {
                onlyInCurrent.append(Self.subject(phase))
                continue
            }
            let rounds = baseline.allPhases.filter { PhaseKey($0) == key }
            for measure in Self.phaseMeasures {
                let values = rounds.map(measure.value)
                let spread = values.count > 1 ? values.max()! - values.min()! : 0
                add(
                    Self.subject(phase), measure.name, measure.value(old), measure.value(phase), spread: spread,
                    higherIsBetter: measure.higherIsBetter)
            }
        }
        onlyInBaseline = baseline.phases.filter { !currentKeys.contains(PhaseKey($0)) }.map(Self.subject)
        addMemory(baseline, current)
        addNotes(baseline.options, current.options)
    }

    private static func subject(_ phase: PhaseResult) -> String {
        "\(phase.server) \(phase.label), \(phase.callers) caller\(phase.callers == 1 ? "" : "s")"
            + (phase.apps.map { " over \($0) app\($0 == 1 ? "" : "s")" } ?? "")
    }

    private mutating func add(
        _ subject: String, _ measure: String, _ old: Double, _ new: Double, spread: Double = 0,
        higherIsBetter: Bool = false
    ) {
        let change = old != 0 ? (new - old) / abs(old) * 100 : nil
        let noise = max(Self.minimumNoisePercent, old != 0 ? spread / abs(old) * 100 : 0)
        rows.append(
            Row(
                subject: subject, measure: measure, baseline: old, current: new, changePercent: change,
                noisePercent: noise, higherIsBetter: higherIsBetter))
    }

    /// hangard's RSS in `run`'s own hangard, and the memory scenario's figures (one sample each: 15 % is the noise).
    private mutating func addMemory(_ baseline: BenchReport, _ current: BenchReport) {
        if let old = baseline.daemon, let new = current.daemon, old.apps == new.apps {
            let subject = "hangard, \(new.apps) apps declared"
            add(subject, "RSS idle MB", old.idleRSSMB, new.idleRSSMB)
            add(subject, "RSS all apps connected MB", old.connectedRSSMB, new.connectedRSSMB)
        }
        guard let old = baseline.memory, let new = current.memory else { return }
        let states: [(String, MemoryReport.Footprint, MemoryReport.Footprint)] = [
            ("memory: idle, 1 app", old.idleOneApp, new.idleOneApp),
            ("memory: idle, \(new.idleDeclared.appsDeclared) apps", old.idleDeclared, new.idleDeclared),
            (
                "memory: \(new.connected.appsDeclared) apps, \(new.connected.appsConnected) connected", old.connected,
                new.connected
            ),
        ]
        for (subject, before, after) in states {
            add(subject, "RSS MB", before.rssMB, after.rssMB)
            add(subject, "PSS MB", before.pssMB, after.pssMB)
        }
        add("memory: per declared app", "RSS KB", old.perDeclaredApp.rssKB, new.perDeclaredApp.rssKB)
        add("memory: per connected app", "RSS KB", old.perConnectedApp.rssKB, new.perConnectedApp.rssKB)
    }

    private mutating func addNotes(_ old: BenchReport.Options, _ new: BenchReport.Options) {
        let pairs: [(String, String, String)] = [
            ("--apps", "\(old.apps)", "\(new.apps)"),
            ("--connect-apps", old.connectApps.map(String.init) ?? "-", new.connectApps.map(String.init) ?? "-"),
            ("--calls", old.sequentialCalls.map(String.init) ?? "-", new.sequentialCalls.map(String.init) ?? "-"),
            ("--duration", old.durationSeconds.map { "\($0)" } ?? "-", new.durationSeconds.map { "\($0)" } ?? "-"),
            ("--rounds", "\(old.rounds)", "\(new.rounds)"),
            ("--value-bytes", "\(old.valueBytes)", "\(new.valueBytes)"),
            ("--client-threads", "\(old.clientThreads)", "\(new.clientThreads)"),
        ]
        for (option, before, after) in pairs where before != after {
            notes.append("\(option) differs: baseline \(before), current \(after)")
        }
    }

    /// The comparison as text.
    func render() -> String {
        let format = TextTable.format
        var lines = [
            "hangar-bench compare",
            "baseline: \(baseline)",
            "current:  \(current)",
            "a change is beyond noise when it exceeds max(\(format(Self.minimumNoisePercent, 0)) %, the baseline's "
                + "min–max spread over its rounds)",
        ]
        lines += notes.map { "  note: \($0)" }
        lines.append("")
        var table = [["subject", "measure", "baseline", "current", "change %", "noise %", "verdict"]]
        var previous = ""
        for row in rows {
            table.append([
                row.subject == previous ? "" : row.subject, row.measure, format(row.baseline, 1),
                format(row.current, 1), row.changePercent.map { TextTable.signed($0, 1) } ?? "-",
                format(row.noisePercent, 0), row.verdict,
            ])
            previous = row.subject
        }
        lines += TextTable.align(table, leftColumns: 2)
        for (title, subjects) in [("only in the baseline", onlyInBaseline), ("only in the current run", onlyInCurrent)]
        where !subjects.isEmpty {
            lines.append("  \(title): \(subjects.joined(separator: "; "))")
        }
        let beyond = rows.filter(\.beyondNoise)
        let worse = beyond.filter { $0.verdict == "WORSE" }
        lines.append("")
        lines.append(
            "\(beyond.count) change(s) beyond noise: \(worse.count) worse, \(beyond.count - worse.count) better")
        for row in worse {
            lines.append(
                "  WORSE \(row.subject): \(row.measure) \(format(row.baseline, 1)) → \(format(row.current, 1)) "
                    + "(\(row.changePercent.map { TextTable.signed($0, 1) } ?? "-") %)")
        }
        return lines.joined(separator: "\n")
    }
}
