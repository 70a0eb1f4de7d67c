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
        var sequentialCalls: Int?
        var concurrentCallsPerCaller: Int?
        var durationSeconds: Double?
        var warmupSeconds: Double
        var valueBytes: Int
        var keysPerCaller: Int
        var clientThreads: Int
    }

    /// A measured server process (hangard or the echo server): memory and lifecycle, MB being 10^6 bytes.
    struct ServerProcess: Codable, Sendable {
        var path: String
        var apps: Int
        var secondsToReady: Double
        var idleRSSMB: Double
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
    }

    var date: String
    var command: String
    var machine: Machine
    var options: Options
    var daemon: ServerProcess?
    var echo: ServerProcess?
    var phases: [PhaseResult] = []
    var targets: [TargetCheck] = []

    func phase(server: String, operation: String, store: String?, mode: String) -> PhaseResult? {
        phases.first { $0.server == server && $0.operation == operation && $0.store == store && $0.mode == mode }
    }

    /// Checks the targets that this run has the numbers for.
    mutating func checkTargets() {
        targets = []
        let getSequential = phase(server: "hangard", operation: "GetState", store: "memstore", mode: "sequential")
        let getConcurrent = phase(server: "hangard", operation: "GetState", store: "memstore", mode: "concurrent")
        let echoSequential = phase(server: "echo", operation: "Echo", store: nil, mode: "sequential")
        if let getSequential {
            targets.append(
                TargetCheck(
                    name: "hangard CPU per GetState (in-memory, 1 caller)", target: "<= 40",
                    measured: getSequential.serverCPUMicrosPerCall, unit: "µs", met: getSequential.serverCPUMicrosPerCall <= 40))
        }
        if let getConcurrent {
            targets.append(
                TargetCheck(
                    name: "hangard CPU per GetState (in-memory, \(getConcurrent.callers) callers)", target: "<= 40",
                    measured: getConcurrent.serverCPUMicrosPerCall, unit: "µs", met: getConcurrent.serverCPUMicrosPerCall <= 40))
            targets.append(
                TargetCheck(
                    name: "GetState calls/s (in-memory, \(getConcurrent.callers) callers)", target: ">= 20000",
                    measured: getConcurrent.callsPerSecond, unit: "calls/s", met: getConcurrent.callsPerSecond >= 20_000))
        }
        if let getSequential, let echoSequential, echoSequential.latency.p50 > 0 {
            let ratio = getSequential.latency.p50 / echoSequential.latency.p50
            targets.append(
                TargetCheck(
                    name: "GetState p50 / echo p50 (1 caller)", target: "<= 1.5", measured: ratio, unit: "×",
                    met: ratio <= 1.5))
        }
        if let daemon {
            targets.append(
                TargetCheck(
                    name: "hangard RSS idle (\(daemon.apps) apps declared)", target: "<= 25", measured: daemon.idleRSSMB,
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
        let kernel = ProcessSample.readProcFile("/proc/sys/kernel/osrelease")?.trimmingCharacters(in: .whitespacesAndNewlines)
        return Machine(cores: ProcessInfo.processInfo.activeProcessorCount, cpuModel: model, kernel: kernel ?? "unknown")
    }
}
