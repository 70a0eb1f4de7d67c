import Foundation
import Glibc
import NIOCore

/// Drives closed-loop callers against one server process and measures a phase: client-observed latency and
/// throughput, and the server's CPU time, context switches and RSS from `/proc`.
struct LoadGenerator: Sendable {
    /// The server process measured (hangard or the echo server).
    let serverPID: pid_t
    let serverName: String
    /// Time the run may spend waiting for other processes to quiet down before a phase and re-running phases
    /// they disturbed; nil to do neither.
    var patience: PatienceBudget?
    /// Runs of a phase at most while other processes disturb it; the least disturbed run is kept.
    var attempts = 3
    /// Other processes' load, in cores, above which a phase counts as disturbed.
    var quietCores = 0.1

    /// What a phase calls: `requests[i]` are the pre-encoded requests caller `i` cycles through, over gRPC or HTTP.
    struct Load: Sendable {
        var operation: String
        var store: String?
        var requests: Requests
        /// The process the server passes every call on to (the invoked app, for service invocation; the backend
        /// server, for a state store on Redis or PostgreSQL), if any: its CPU (with its children's) is measured
        /// beside the server's, and not counted as other processes' load.
        var calleePID: pid_t? = nil

        enum Requests: Sendable {
            case grpc([[GRPCClientRequest]])
            case http([[HTTPClientRequest]])
        }

        var transport: BenchTransport {
            switch requests {
            case .grpc: .grpc
            case .http: .http
            }
        }

        var callerCount: Int {
            switch requests {
            case .grpc(let requests): requests.count
            case .http(let requests): requests.count
            }
        }
    }

    /// Runs a warm-up, then the measured phase, with `callers` callers spread round-robin over the connections of
    /// the load's transport; again (up to `attempts` times) while other processes kept more than `quietCores`
    /// cores busy meanwhile.
    func measure(
        _ load: Load, callers: Int, connections: BenchConnections, warmup: PhaseLength, length: PhaseLength
    ) async throws -> PhaseResult {
        precondition(
            callers > 0 && connections.count(load.transport) > 0 && load.callerCount >= callers)
        var best: PhaseResult?
        for attempt in 1...max(1, attempts) {
            try await waitForQuiet()
            let started = ContinuousClock.now
            var result = try await measureOnce(
                load, callers: callers, connections: connections, warmup: warmup, length: length)
            if attempt > 1 { patience?.spend(ContinuousClock.now - started) }
            result.attempt = attempt
            let disturbance = result.otherBusyCores ?? 0
            if disturbance < (best?.otherBusyCores ?? .infinity) { best = result }
            guard disturbance > quietCores, attempt < attempts, let patience, !patience.isExhausted else { break }
            Self.warn(
                "other processes used \(String(format: "%.2f", disturbance)) cores during \(serverName) "
                    + "\(result.label); running it again")
        }
        return best!
    }

    /// Waits (within the patience budget) until other processes use less than `quietCores`.
    private func waitForQuiet() async throws {
        guard let patience, !patience.isExhausted else { return }
        let busy = try await patience.waitForQuiet(threshold: quietCores, limit: .seconds(15))
        if busy >= quietCores {
            Self.warn("other processes keep \(String(format: "%.2f", busy)) cores busy; measuring anyway")
        }
    }

    private static func warn(_ message: String) {
        FileHandle.standardError.write(Data("· \(message)\n".utf8))
    }

    private func measureOnce(
        _ load: Load, callers: Int, connections: BenchConnections, warmup: PhaseLength, length: PhaseLength
    ) async throws -> PhaseResult {
        _ = try await drive(load, callers: callers, connections: connections, length: warmup)

        let systemBefore = SystemCPUSample.read()
        let before = try ProcessSample.read(pid: serverPID)
        let calleeBefore = load.calleePID.flatMap(ProcessSample.treeCPUMicros(pid:))
        let clientBefore = ProcessSample.ownCPUMicros()
        let (outcomes, nanoseconds) = try await drive(load, callers: callers, connections: connections, length: length)
        let clientAfter = ProcessSample.ownCPUMicros()
        let calleeAfter = load.calleePID.flatMap(ProcessSample.treeCPUMicros(pid:))
        let after = try ProcessSample.read(pid: serverPID)
        let systemAfter = SystemCPUSample.read()

        var samples: [UInt64] = []
        samples.reserveCapacity(outcomes.reduce(0) { $0 + $1.samples.count })
        for outcome in outcomes { samples.append(contentsOf: outcome.samples) }
        let calls = samples.count
        let errors = outcomes.reduce(0) { $0 + $1.errors }
        let attempted = max(1, calls + errors)
        let seconds = Double(nanoseconds) / 1_000_000_000
        let serverMicros = ProcessSample.cpuMicros(from: before, to: after)
        let clientMicros = clientAfter - clientBefore
        var calleeMicros: Double?
        if let calleeBefore, let calleeAfter { calleeMicros = calleeAfter - calleeBefore }
        let (otherBusyCores, stealPercent) = SystemCPUSample.otherLoad(
            from: systemBefore, to: systemAfter, knownMicros: serverMicros + clientMicros + (calleeMicros ?? 0),
            seconds: seconds)
        return PhaseResult(
            server: serverName, operation: load.operation, store: load.store, transport: load.transport,
            mode: callers == 1 ? "sequential" : "concurrent", callers: callers, apps: connections.apps,
            connections: min(callers, connections.count(load.transport)), calls: calls, errors: errors,
            firstError: outcomes.lazy.compactMap(\.firstError).first, seconds: seconds,
            callsPerSecond: Double(calls) / seconds, latency: LatencySummary(samples: samples),
            serverCPUMicrosPerCall: serverMicros / Double(attempted),
            serverContextSwitchesPerCall: Double(after.contextSwitches - before.contextSwitches) / Double(attempted),
            clientCPUMicrosPerCall: clientMicros / Double(attempted),
            calleeCPUMicrosPerCall: calleeMicros.map { $0 / Double(attempted) }, otherBusyCores: otherBusyCores,
            stealPercent: stealPercent,
            serverRSSMB: Double(after.rssKiB) * 1024 / 1_000_000)
    }

    /// Runs the callers until each stops; returns what each saw and the wall time from start to the last one done.
    private func drive(
        _ load: Load, callers: Int, connections: BenchConnections, length: PhaseLength
    ) async throws -> ([CallerOutcome], UInt64) {
        switch load.requests {
        case .grpc(let requests):
            try await drive(requests, callers: callers, connections: connections.grpc, length: length)
        case .http(let requests):
            try await drive(requests, callers: callers, connections: connections.http, length: length)
        }
    }

    private func drive<Connection: UnaryClientConnection>(
        _ requests: [[Connection.Handler.Request]], callers: Int, connections: [Connection], length: PhaseLength
    ) async throws -> ([CallerOutcome], UInt64) {
        let start = NIODeadline.now().uptimeNanoseconds
        let stop = length.stop(callers: callers, start: start)
        var futures: [EventLoopFuture<CallerOutcome>] = []
        for index in 0..<callers {
            let connection = connections[index % connections.count]
            let handler = connection.handler
            let callerRequests = requests[index]
            futures.append(
                connection.eventLoop.flatSubmit {
                    ClosedLoopCaller(
                        handler: handler.value, requests: callerRequests, stop: stop, eventLoop: connection.eventLoop
                    ).start()
                })
        }
        var outcomes: [CallerOutcome] = []
        for future in futures { outcomes.append(try await future.get()) }
        return (outcomes, NIODeadline.now().uptimeNanoseconds - start)
    }
}
