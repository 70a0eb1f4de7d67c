import Foundation

/// Everything one bench run measured, as written by `--json` and printed as a table.
struct BenchReport: Codable, Sendable {
    struct Machine: Codable, Sendable {
        var cores: Int
        var cpuModel: String
        var kernel: String
    }

    struct Options: Codable, Sendable {
        var apps: Int
        var concurrency: Int
        /// The apps the concurrent callers are spread over; nil in results written before `--connect-apps`.
        var connectApps: Int?
        var sequentialCalls: Int?
        var concurrentCallsPerCaller: Int?
        var durationSeconds: Double?
        var warmupSeconds: Double
        var rounds: Int
        var valueBytes: Int
        var keysPerCaller: Int
        var clientThreads: Int
        var patienceSeconds: Double
        var attempts: Int
    }

    /// A measured server process (hangard or the echo server): memory and lifecycle, MB being 10^6 bytes.
    struct ServerProcess: Codable, Sendable {
        var path: String
        var apps: Int
        var secondsToReady: Double
        var idleRSSMB: Double
        /// Idle RSS split: anonymous (private heap and stacks) and file-backed (binary and shared libraries).
        var idleAnonymousRSSMB: Double
        var idleFileRSSMB: Double
        var idleThreads: Int
        /// After every app connected once (one connection each) and made one call.
        var connectedRSSMB: Double
        var connectedThreads: Int
        var afterLoadRSSMB: Double?
        var peakRSSMB: Double?
        var shutdownSeconds: Double?
        var exitStatus: Int32?
    }

    /// One target of the issue, checked against what was measured.
    struct TargetCheck: Codable, Sendable {
        var name: String
        var target: String
        var measured: Double
        var unit: String
        var met: Bool
        /// [min, max] over the rounds, when the measure is taken per round.
        var range: [Double]? = nil
    }

    var date: String
    var command: String
    var machine: Machine
    var options: Options
    var daemon: ServerProcess?
    var echo: ServerProcess?
    /// The memory scenario, from hangards of its own.
    var memory: MemoryReport?
    /// One result per phase: the round with the median server CPU per call, with the spread over the rounds.
    var phases: [PhaseResult] = []
    /// Every round of every phase, in the order run.
    var allPhases: [PhaseResult] = []
    /// Service invocation over a direct call, per caller count (the `invoke` scenario); nil without it.
    var invocation: [InvocationOverhead]?
    /// Every phase of every round of the `stream` scenario, and what they add up to; nil without it.
    var streamPhases: [StreamPhaseResult]?
    var streaming: StreamingSummary?
    /// Every phase of every round of the `pubsub` scenario, and the pub/sub figures (with the `publish-*` phases,
    /// beside GetState); nil without them.
    var pubsubPhases: [PubSubPhaseResult]?
    var pubsub: PubSubSummary?
    var targets: [TargetCheck] = []

    func phase(
        server: String, operation: String, store: String?, mode: String, transport: BenchTransport = .grpc
    ) -> PhaseResult? {
        phases.first {
            $0.server == server && $0.operation == operation && $0.store == store && $0.mode == mode
                && $0.api == transport
        }
    }

    /// Checks the targets that this run has the numbers for.
    mutating func checkTargets() {
        targets = []
        for transport in [BenchTransport.grpc, .http] {
            let over = transport == .http ? " over HTTP" : ""
            for mode in ["sequential", "concurrent"] {
                guard
                    let get = phase(
                        server: "hangard", operation: "GetState", store: "memstore", mode: mode, transport: transport)
                else { continue }
                let callers = get.callers == 1 ? "1 caller" : "\(get.callers) callers"
                targets.append(
                    TargetCheck(
                        name: "hangard CPU per GetState\(over) (in-memory, \(callers))", target: "<= 40",
                        measured: get.serverCPUMicrosPerCall, unit: "µs", met: get.serverCPUMicrosPerCall <= 40))
            }
        }
        if let getConcurrent = phase(server: "hangard", operation: "GetState", store: "memstore", mode: "concurrent") {
            let apps = getConcurrent.apps.map { " over \($0) apps" } ?? ""
            targets.append(
                TargetCheck(
                    name: "GetState calls/s (in-memory, \(getConcurrent.callers) callers\(apps))", target: ">= 20000",
                    measured: getConcurrent.callsPerSecond, unit: "calls/s", met: getConcurrent.callsPerSecond >= 20_000
                ))
        }
        // Paired within each round (the two phases ran minutes apart at most), then the median over the rounds.
        let ratios = Set(allPhases.map(\.round)).sorted().compactMap { round -> Double? in
            func sequential(_ server: String, _ operation: String, _ store: String?) -> PhaseResult? {
                allPhases.first {
                    $0.round == round && $0.server == server && $0.operation == operation && $0.store == store
                        && $0.mode == "sequential" && $0.api == .grpc
                }
            }
            guard let get = sequential("hangard", "GetState", "memstore"), let echo = sequential("echo", "Echo", nil),
                echo.latency.p50 > 0
            else { return nil }
            return get.latency.p50 / echo.latency.p50
        }.sorted()
        if !ratios.isEmpty {
            let ratio = ratios[(ratios.count - 1) / 2]
            targets.append(
                TargetCheck(
                    name: "GetState p50 / echo p50 (1 caller, same round)", target: "<= 1.5", measured: ratio,
                    unit: "×",
                    met: ratio <= 1.5, range: ratios.count > 1 ? [ratios[0], ratios[ratios.count - 1]] : nil))
        }
        // Issue 15: a GetState on state.sqlite against one on state.in-memory, hangard's CPU per call, paired within
        // each round, then the median over the rounds.
        let sqliteRatios = Set(allPhases.map(\.round)).sorted().compactMap { round -> Double? in
            func get(_ store: String) -> PhaseResult? {
                allPhases.first {
                    $0.round == round && $0.server == "hangard" && $0.operation == "GetState" && $0.store == store
                        && $0.mode == "sequential" && $0.api == .grpc
                }
            }
            guard let memory = get("memstore"), let sqlite = get("sqlstore"), memory.serverCPUMicrosPerCall > 0
            else { return nil }
            return sqlite.serverCPUMicrosPerCall / memory.serverCPUMicrosPerCall
        }.sorted()
        if !sqliteRatios.isEmpty {
            let ratio = sqliteRatios[(sqliteRatios.count - 1) / 2]
            targets.append(
                TargetCheck(
                    name: "hangard CPU per GetState, state.sqlite / state.in-memory (1 caller, same round)",
                    target: "<= 1.5", measured: ratio, unit: "×", met: ratio <= 1.5,
                    range: sqliteRatios.count > 1 ? [sqliteRatios[0], sqliteRatios[sqliteRatios.count - 1]] : nil))
        }
        let invocation = InvocationOverhead.measure(allPhases)
        self.invocation = invocation.isEmpty ? nil : invocation
        targets += invocation.flatMap(\.targets)
        targets += memory?.targets ?? []
        targets += pubsub?.targets ?? []
        if let daemon {
            targets.append(
                TargetCheck(
                    name: "hangard RSS idle (\(daemon.apps) apps declared)", target: "<= 25",
                    measured: daemon.idleRSSMB,
                    unit: "MB", met: daemon.idleRSSMB <= 25))
        }
    }

    /// The machine this runs on: core count, CPU model (`/proc/cpuinfo`) and kernel release.
    static func currentMachine() -> Machine {
        let cpuinfo = ProcessSample.readProcFile("/proc/cpuinfo") ?? ""
        let model =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }
            .flatMap { $0.split(separator: ":", maxSplits: 1).last }
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown"
        let kernel = ProcessSample.readProcFile("/proc/sys/kernel/osrelease")?.trimmingCharacters(
            in: .whitespacesAndNewlines)
        return Machine(
            cores: ProcessInfo.processInfo.activeProcessorCount, cpuModel: model, kernel: kernel ?? "unknown")
    }
}
