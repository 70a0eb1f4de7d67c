import Foundation
import Glibc
import NIOCore
import NIOHPACK

/// The `stream` scenario (issue 13: "messages/s and daemon CPU per message on one server stream with a slow and a
/// fast consumer on the same connection; the fast one's unary calls must not slow down").
///
/// hangard serves no server-streaming Dapr method yet, but it proxies every gRPC call shape: the echo server's
/// `/hangar.bench.v1.Echo/Stream`, called on an app's socket with `dapr-app-id: callee`, is relayed by hangard to
/// the echo server (the app `callee`) as a stream. On ONE HTTP/2 connection to app-0's socket the bench opens a fast
/// consumer of that stream, a slow one (whose window it credits only at `slowRate` messages/s), and runs a closed
/// loop of GetState (in-memory); the reference is the same fast consumer reading the echo server directly. Each
/// round has seven phases (`StreamPhaseResult.Kind`): the direct stream, Echo alone and beside the direct stream
/// on its connection, GetState alone, the two streams, the two streams with GetState, and (the control) the two
/// streams with GetState on a second connection to the same socket. Streams run until the bench cancels them at the
/// end of the phase; every message is checked (`GRPCStreamConsumer`), and a stream that fails or an error answer
/// fails the run.
struct StreamScenario: Sendable {
    /// Every stream's receive window on the bench's connections: HTTP/2's default, what gRPC clients start with. A
    /// slow consumer is then at most this far behind its server, and reaches its credit rate within the warm-up.
    static let streamWindow = 65_535

    let hangard: GRPCClientConnection
    /// A second connection to app-0's socket: the control phase's GetState loop.
    let hangardOther: GRPCClientConnection
    let echo: GRPCClientConnection
    let hangardPID: pid_t
    let echoPID: pid_t
    let payloadBytes: Int
    let slowRate: Double
    let warmup: Double
    let duration: Double
    let getStates: [GRPCClientRequest]
    /// The direct phases' unary call: Echo of a `payloadBytes` payload.
    let echoCall: GRPCClientRequest
    let patience: PatienceBudget
    let attempts: Int
    /// Other processes' load, in cores, above which a phase counts as disturbed (as `LoadGenerator`'s).
    let quietCores = 0.1

    /// Connects (two connections to app-0's gRPC socket, one to the echo server's), stores the keys the GetState
    /// loop reads and reads one back, and checks that a finite stream of `payloadBytes`-byte messages arrives
    /// whole, directly and through hangard: exactly the messages asked for, each of the right size and index, then
    /// OK trailers.
    static func prepare(
        fixture: BenchFixture, group: any EventLoopGroup, hangardPID: pid_t, echoPID: pid_t, payloadBytes: Int,
        slowRate: Double, warmup: Double, duration: Double, keys: Int, patience: PatienceBudget, attempts: Int
    ) async throws -> StreamScenario {
        var connections: [GRPCClientConnection] = []
        do {
            for socket in [fixture.grpcSocket(app: 0), fixture.grpcSocket(app: 0), fixture.echoSocket] {
                connections.append(
                    try await GRPCClientConnection.connect(unixSocket: socket, group: group, streamWindow: streamWindow)
                )
            }
        } catch {
            await GRPCClientConnection.close(connections)
            throw error
        }
        let hangard = connections[0]
        let scenario = StreamScenario(
            hangard: hangard, hangardOther: connections[1], echo: connections[2], hangardPID: hangardPID,
            echoPID: echoPID, payloadBytes: payloadBytes,
            slowRate: slowRate, warmup: warmup, duration: duration,
            getStates: try (0..<keys).map {
                GRPCClientRequest(
                    path: BenchRequests.getStatePath,
                    message: try BenchRequests.getState(store: "memstore", key: "s\($0)"))
            },
            echoCall: GRPCClientRequest(
                path: BenchRequests.echoPath,
                message: try BenchRequests.echo(payload: BenchRequests.value(bytes: payloadBytes))),
            patience: patience, attempts: attempts)
        do {
            let value = BenchRequests.value(bytes: payloadBytes)
            _ = try await hangard.unary(
                path: BenchRequests.saveStatePath,
                message: try BenchRequests.saveState(store: "memstore", keys: (0..<keys).map { "s\($0)" }, value: value)
            ).get()
            guard try BenchRequests.decodeGetState(try await hangard.call(scenario.getStates[0]).get()) == value else {
                throw BenchError("GetState on memstore did not return the value just saved")
            }
            try await scenario.checkFiniteStream(throughHangard: false)
            try await scenario.checkFiniteStream(throughHangard: true)
        } catch {
            await scenario.close()
            throw error
        }
        return scenario
    }

    func close() async {
        await GRPCClientConnection.close([hangard, hangardOther, echo])
    }

    /// The phases of one round, in order.
    func runRound(_ round: Int) async throws -> [StreamPhaseResult] {
        var results: [StreamPhaseResult] = []
        for kind in StreamPhaseResult.Kind.allCases {
            var result = try await measure(kind)
            result.round = round
            TextTable.progress(Self.describe(result))
            results.append(result)
        }
        return results
    }

    // MARK: Phases

    /// The phase, again (up to `attempts` times, within the patience budget) while other processes disturbed it;
    /// the least disturbed run is kept.
    private func measure(_ kind: StreamPhaseResult.Kind) async throws -> StreamPhaseResult {
        var best: StreamPhaseResult?
        for attempt in 1...max(1, attempts) {
            if !patience.isExhausted {
                let busy = try await patience.waitForQuiet(threshold: quietCores, limit: .seconds(15))
                if busy >= quietCores {
                    TextTable.progress(
                        "other processes keep \(TextTable.format(busy, 2)) cores busy; measuring anyway")
                }
            }
            let started = ContinuousClock.now
            var result = try await measureOnce(kind)
            if attempt > 1 { patience.spend(ContinuousClock.now - started) }
            result.attempt = attempt
            let disturbance = result.otherBusyCores ?? 0
            if disturbance < (best?.otherBusyCores ?? .infinity) { best = result }
            guard disturbance > quietCores, attempt < attempts, !patience.isExhausted else { break }
            TextTable.progress(
                "other processes used \(TextTable.format(disturbance, 2)) cores during stream phase \(kind.rawValue); "
                    + "running it again")
        }
        return best!
    }

    private func measureOnce(_ kind: StreamPhaseResult.Kind) async throws -> StreamPhaseResult {
        let connection = kind.throughHangard ? hangard : echo
        let serverPID = kind.throughHangard ? hangardPID : echoPID
        let calleePID: pid_t? = kind.throughHangard ? echoPID : nil
        var paces: [GRPCStreamConsumer.Pace] = []
        if kind.hasFast { paces.append(.fast) }
        if kind.hasSlow { paces.append(.limited(messagesPerSecond: slowRate)) }
        let consumers = try await open(paces, on: connection, throughHangard: kind.throughHangard)
        do {
            let warmupEnd = NIODeadline.now().uptimeNanoseconds + UInt64(warmup * 1_000_000_000)
            let unaryConnection = kind == .streamsWithUnaryElsewhere ? hangardOther : connection
            if kind.hasUnary {
                _ = try await unary(on: unaryConnection, kind, until: warmupEnd)
            } else {
                try await Self.sleep(until: warmupEnd)
            }
            let countsBefore = try await counts(consumers, on: connection)
            let systemBefore = SystemCPUSample.read()
            let before = try ProcessSample.read(pid: serverPID)
            let calleeBefore = try calleePID.map(ProcessSample.read(pid:))
            let clientBefore = ProcessSample.ownCPUMicros()
            let start = NIODeadline.now().uptimeNanoseconds
            let end = start + UInt64(duration * 1_000_000_000)

            async let rss = Self.sampleRSS(pid: serverPID, until: end)
            var outcome: CallerOutcome?
            if kind.hasUnary {
                outcome = try await unary(on: unaryConnection, kind, until: end)
            } else {
                try await Self.sleep(until: end)
            }
            let countsAfter = try await counts(consumers, on: connection)
            let stop = NIODeadline.now().uptimeNanoseconds
            let clientAfter = ProcessSample.ownCPUMicros()
            let calleeAfter = try calleePID.map(ProcessSample.read(pid:))
            let after = try ProcessSample.read(pid: serverPID)
            let systemAfter = SystemCPUSample.read()
            let rssKiB = await rss

            // Ends the streams; a stream that failed meanwhile fails the run.
            try await finish(consumers, on: connection, kind: kind)
            if let outcome, outcome.errors > 0 {
                throw BenchError(
                    "stream phase \(kind.rawValue): \(outcome.errors) unary errors (\(outcome.firstError ?? "?"))")
            }

            let seconds = Double(stop - start) / 1_000_000_000
            let serverMicros = ProcessSample.cpuMicros(from: before, to: after)
            let clientMicros = clientAfter - clientBefore
            let calleeMicros = calleeBefore.flatMap { before in
                calleeAfter.map { ProcessSample.cpuMicros(from: before, to: $0) }
            }
            let (otherBusyCores, stealPercent) = SystemCPUSample.otherLoad(
                from: systemBefore, to: systemAfter, knownMicros: serverMicros + clientMicros + (calleeMicros ?? 0),
                seconds: seconds)
            var result = StreamPhaseResult(
                kind: kind, server: kind.throughHangard ? "hangard" : "echo", seconds: seconds,
                serverCPUMicros: serverMicros, serverContextSwitches: after.contextSwitches - before.contextSwitches,
                clientCPUMicros: clientMicros, serverRSSMBStart: BenchServer.megabytes(rssKiB.start),
                serverRSSMBPeak: BenchServer.megabytes(max(rssKiB.peak, before.rssKiB, after.rssKiB)),
                serverRSSMBEnd: BenchServer.megabytes(after.rssKiB), otherBusyCores: otherBusyCores,
                stealPercent: stealPercent)
            var index = 0
            if kind.hasFast {
                let messages = countsAfter[index].received - countsBefore[index].received
                result.fastMessages = messages
                result.fastMessagesPerSecond = Double(messages) / seconds
                index += 1
            }
            if kind.hasSlow {
                let consumed = countsAfter[index].consumed - countsBefore[index].consumed
                let received = countsAfter[index].received - countsBefore[index].received
                result.slowCreditRate = slowRate
                result.slowMessages = consumed
                result.slowMessagesPerSecond = Double(consumed) / seconds
                result.slowReceived = received
                result.slowReceivedPerSecond = Double(received) / seconds
                result.slowBacklog = countsAfter[index].backlog
            }
            if let outcome {
                result.unaryCalls = outcome.samples.count
                result.unaryCallsPerSecond = Double(outcome.samples.count) / seconds
                result.unaryLatency = LatencySummary(samples: outcome.samples)
            }
            if result.messages > 0 {
                result.serverCPUMicrosPerMessage = serverMicros / Double(result.messages)
                result.calleeCPUMicrosPerMessage = calleeMicros.map { $0 / Double(result.messages) }
            } else if let calls = result.unaryCalls, calls > 0 {
                result.serverCPUMicrosPerUnaryCall = serverMicros / Double(calls)
            }
            return result
        } catch {
            _ = try? await finish(consumers, on: connection, kind: kind)
            throw error
        }
    }

    /// Opens one endless stream per pace on `connection`'s event loop.
    private func open(
        _ paces: [GRPCStreamConsumer.Pace], on connection: GRPCClientConnection, throughHangard: Bool
    ) async throws -> NIOLoopBound<[GRPCStreamConsumer]> {
        let headers =
            throughHangard
            ? BenchRequests.proxiedHeaders(path: BenchRequests.streamPath, target: BenchFixture.calleeAppID)
            : GRPCClientHandler.requestHeaders(path: BenchRequests.streamPath)
        let request = try BenchRequests.streamRequest(count: 0, payloadBytes: payloadBytes)
        let handler = connection.handler
        let eventLoop = connection.eventLoop
        let payloadBytes = payloadBytes
        return try await eventLoop.submit {
            let consumers = try paces.map { pace in
                try GRPCStreamConsumer(
                    handler: handler.value, eventLoop: eventLoop, pace: pace, payloadBytes: payloadBytes)
            }
            for consumer in consumers { consumer.start(headers: headers, request: request) }
            return NIOLoopBound(consumers, eventLoop: eventLoop)
        }.get()
    }

    /// Each consumer's counts now; fails if a stream has failed.
    private func counts(
        _ consumers: NIOLoopBound<[GRPCStreamConsumer]>, on connection: GRPCClientConnection
    ) async throws -> [GRPCStreamConsumer.Counts] {
        try await connection.eventLoop.submit {
            if let failure = consumers.value.lazy.compactMap(\.failure).first { throw BenchError("stream: \(failure)") }
            return consumers.value.map(\.counts)
        }.get()
    }

    /// Cancels every stream and waits for their outcomes: a stream that had failed fails this.
    private func finish(
        _ consumers: NIOLoopBound<[GRPCStreamConsumer]>, on connection: GRPCClientConnection,
        kind: StreamPhaseResult.Kind
    ) async throws {
        let outcomes = try await connection.eventLoop.submit {
            consumers.value.map { consumer in
                consumer.cancel()
                return consumer.outcome
            }
        }.get()
        for outcome in outcomes {
            do {
                _ = try await outcome.get()
            } catch {
                throw BenchError("stream phase \(kind.rawValue) (\(throughName(kind))): \(error)")
            }
        }
    }

    private func throughName(_ kind: StreamPhaseResult.Kind) -> String {
        kind.throughHangard ? "through hangard" : "direct"
    }

    /// The closed loop of the phase's unary call (GetState through hangard, Echo directly) on `connection` until
    /// `deadline` (monotonic nanoseconds).
    private func unary(
        on connection: GRPCClientConnection, _ kind: StreamPhaseResult.Kind, until deadline: UInt64
    ) async throws -> CallerOutcome {
        let handler = connection.handler
        let eventLoop = connection.eventLoop
        let requests = kind.throughHangard ? getStates : [echoCall]
        return try await eventLoop.flatSubmit {
            ClosedLoopCaller(
                handler: handler.value, requests: requests, stop: .deadline(deadline), eventLoop: eventLoop
            )
            .start()
        }.get()
    }

    /// A stream of `count` messages, read by a fast consumer to its end: it must end OK with every message whole.
    private func checkFiniteStream(throughHangard: Bool, count: Int = 2_000) async throws {
        let connection = throughHangard ? hangard : echo
        let headers =
            throughHangard
            ? BenchRequests.proxiedHeaders(path: BenchRequests.streamPath, target: BenchFixture.calleeAppID)
            : GRPCClientHandler.requestHeaders(path: BenchRequests.streamPath)
        let request = try BenchRequests.streamRequest(count: count, payloadBytes: payloadBytes)
        let handler = connection.handler
        let eventLoop = connection.eventLoop
        let payloadBytes = payloadBytes
        let outcome = eventLoop.flatSubmit {
            do {
                let consumer = try GRPCStreamConsumer(
                    handler: handler.value, eventLoop: eventLoop, pace: .fast, payloadBytes: payloadBytes,
                    expectedCount: count)
                consumer.start(headers: headers, request: request)
                return consumer.outcome
            } catch {
                return eventLoop.makeFailedFuture(error)
            }
        }
        do {
            _ = try await outcome.get()
        } catch {
            throw BenchError(
                "a stream of \(count) messages \(throughHangard ? "through hangard" : "from the echo server") "
                    + "failed: \(error)")
        }
    }

    // MARK: Helpers

    private static func sleep(until deadline: UInt64) async throws {
        let now = NIODeadline.now().uptimeNanoseconds
        if deadline > now { try await Task.sleep(for: .nanoseconds(Int64(deadline - now))) }
    }

    /// `pid`'s RSS now, and its highest sample every 100 ms until `deadline`, in KiB.
    private static func sampleRSS(pid: pid_t, until deadline: UInt64) async -> (start: Int, peak: Int) {
        func rss() -> Int {
            ProcessSample.readProcFile("/proc/\(pid)/status").flatMap { ProcessSample.statusValue($0, "VmRSS") } ?? 0
        }
        let start = rss()
        var peak = start
        while NIODeadline.now().uptimeNanoseconds < deadline {
            try? await Task.sleep(for: .milliseconds(100))
            peak = max(peak, rss())
        }
        return (start, peak)
    }

    /// The progress line of a phase.
    static func describe(_ result: StreamPhaseResult) -> String {
        var parts = ["stream \(result.kind.rawValue) (\(result.server)):"]
        if let fast = result.fastMessagesPerSecond { parts.append("fast \(TextTable.format(fast, 0)) msg/s,") }
        if let slow = result.slowMessagesPerSecond {
            parts.append(
                "slow \(TextTable.format(slow, 0)) msg/s (credit \(TextTable.format(result.slowCreditRate ?? 0, 0))),")
        }
        if let latency = result.unaryLatency {
            parts.append(
                "\(result.server == "echo" ? "Echo" : "GetState") "
                    + "\(TextTable.format(result.unaryCallsPerSecond ?? 0, 0))/s p50 "
                    + "\(TextTable.format(latency.p50, 1)) p99 \(TextTable.format(latency.p99, 1)) µs,")
        }
        if let perMessage = result.serverCPUMicrosPerMessage {
            parts.append("server \(TextTable.format(perMessage, 2)) µs CPU/msg,")
        } else if let perCall = result.serverCPUMicrosPerUnaryCall {
            parts.append("server \(TextTable.format(perCall, 1)) µs CPU/call,")
        }
        parts.append(
            "RSS \(TextTable.format(result.serverRSSMBStart, 1))→\(TextTable.format(result.serverRSSMBEnd, 1)) MB "
                + "(peak \(TextTable.format(result.serverRSSMBPeak, 1))), other load "
                + (result.otherBusyCores.map { TextTable.format($0, 2) } ?? "-"))
        return parts.joined(separator: " ")
    }
}
