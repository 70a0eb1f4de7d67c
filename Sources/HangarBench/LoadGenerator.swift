import Glibc
import NIOCore

/// Drives closed-loop callers against one server process and measures a phase: client-observed latency and
/// throughput, and the server's CPU time, context switches and RSS from `/proc`.
struct LoadGenerator: Sendable {
    /// The server process measured (hangard or the echo server).
    let serverPID: pid_t
    let serverName: String

    /// What a phase calls: `requests[i]` are the framed requests caller `i` cycles through.
    struct Load: Sendable {
        var operation: String
        var store: String?
        var path: String
        var requests: [[ByteBuffer]]
    }

    /// Runs a warm-up, then the measured phase, with `callers` callers spread round-robin over `connections`.
    func measure(
        _ load: Load, callers: Int, connections: [GRPCClientConnection], warmup: PhaseLength, length: PhaseLength
    ) async throws -> PhaseResult {
        precondition(callers > 0 && !connections.isEmpty && load.requests.count >= callers)
        _ = try await drive(load, callers: callers, connections: connections, length: warmup)

        let before = try ProcessSample.read(pid: serverPID)
        let clientBefore = ProcessSample.ownCPUMicros()
        let (outcomes, nanoseconds) = try await drive(load, callers: callers, connections: connections, length: length)
        let clientAfter = ProcessSample.ownCPUMicros()
        let after = try ProcessSample.read(pid: serverPID)

        var samples: [UInt64] = []
        samples.reserveCapacity(outcomes.reduce(0) { $0 + $1.samples.count })
        for outcome in outcomes { samples.append(contentsOf: outcome.samples) }
        let calls = samples.count
        let errors = outcomes.reduce(0) { $0 + $1.errors }
        let attempted = max(1, calls + errors)
        let seconds = Double(nanoseconds) / 1_000_000_000
        return PhaseResult(
            server: serverName, operation: load.operation, store: load.store,
            mode: callers == 1 ? "sequential" : "concurrent", callers: callers,
            connections: min(callers, connections.count), calls: calls, errors: errors,
            firstError: outcomes.lazy.compactMap(\.firstError).first, seconds: seconds,
            callsPerSecond: Double(calls) / seconds, latency: LatencySummary(samples: samples),
            serverCPUMicrosPerCall: ProcessSample.cpuMicros(from: before, to: after) / Double(attempted),
            serverContextSwitchesPerCall: Double(after.contextSwitches - before.contextSwitches) / Double(attempted),
            clientCPUMicrosPerCall: (clientAfter - clientBefore) / Double(attempted),
            serverRSSMB: Double(after.rssKiB) * 1024 / 1_000_000)
    }

    /// Runs the callers until each stops; returns what each saw and the wall time from start to the last one done.
    private func drive(
        _ load: Load, callers: Int, connections: [GRPCClientConnection], length: PhaseLength
    ) async throws -> ([CallerOutcome], UInt64) {
        let start = NIODeadline.now().uptimeNanoseconds
        let stop = length.stop(callers: callers, start: start)
        var futures: [EventLoopFuture<CallerOutcome>] = []
        for index in 0..<callers {
            let connection = connections[index % connections.count]
            let handler = connection.handler
            let requests = load.requests[index]
            let path = load.path
            futures.append(
                connection.eventLoop.flatSubmit {
                    ClosedLoopCaller(
                        handler: handler.value, path: path, requests: requests, stop: stop, eventLoop: connection.eventLoop
                    ).start()
                })
        }
        var outcomes: [CallerOutcome] = []
        for future in futures { outcomes.append(try await future.get()) }
        return (outcomes, NIODeadline.now().uptimeNanoseconds - start)
    }
}
