import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `hangar-bench run` (the default): starts hangard with N apps and two state stores, and Hangar's own gRPC
/// server with a trivial echo method as the baseline; measures their memory, then in each round GetState and
/// SaveState on each store over gRPC, on the in-memory store over HTTP, Echo, and service invocation (through
/// hangard to the echo server, and directly), each with one caller and with many, and a server stream through
/// hangard with a fast and a slow consumer beside unary calls (`StreamScenario`); prints a table (per phase, the
/// round with the median server CPU per call) and optionally writes every result as JSON.
struct BenchRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Measure hangard: RSS, GetState/SaveState latency, throughput and daemon CPU per call.")

    @OptionGroup var common: HangardOptions

    @Option(help: "What to measure (repeatable).")
    var scenario: [BenchScenario] = [.all]

    @Option(help: "Apps declared in the generated Tenant; each gets its own socket and, in the bench, one connection.")
    var apps = 100

    @Option(help: "Callers in the concurrent phases, spread round-robin over the app connections (1 skips them).")
    var concurrency = 32

    @Option(
        help: ArgumentHelp(
            "Apps the concurrent callers are spread over, round-robin (default: one app per caller, up to --apps).",
            discussion: """
                Over gRPC the callers of one app share its one HTTP/2 connection (several calls in flight on it). \
                HTTP/1.1 has no multiplexing: every caller has a connection of its own to its app's HTTP socket. \
                Each echo phase uses as many connections as hangard's gRPC phases.
                """))
    var connectApps: Int?

    @Option(help: "Apps declared in the memory scenario's second hangard.")
    var memoryApps = 1000

    @Option(help: "Apps of those the memory scenario connects (one gRPC connection and one GetState each).")
    var memoryConnected = 200

    @Option(help: "Calls in each sequential phase.")
    var calls = 20_000

    @Option(help: "Calls per caller in each concurrent phase.")
    var callsPerCaller = 5_000

    @Option(help: "Run every phase for this many seconds instead of a number of calls.")
    var duration: Double?

    @Option(help: "Seconds of unmeasured calls before each phase.")
    var warmup: Double = 1

    @Option(
        help: """
            Passes over every phase; each phase is reported from the round with its median server CPU per call, \
            with the spread over the rounds.
            """)
    var rounds = 3

    @Option(help: "Bytes in each stored value and echo payload.")
    var valueBytes = 100

    @Option(help: "Messages per second the stream scenario's slow consumer takes (and credits to its window).")
    var streamSlowRate: Double = 1000

    @Option(help: "Seconds of each stream phase when --duration is not given.")
    var streamDuration: Double = 3

    @Option(
        help: """
            Events/s of the pubsub scenario's full rate: its half-rate phases publish at half this (default: what \
            publish-sqlite sustained with --concurrency publishers in the same round).
            """)
    var pubsubRate: Double?

    @Option(help: "Events/s of the pubsub scenario's low-rate phases (and of the noisy neighbour's steady tenant).")
    var pubsubLowRate: Double = 200

    @Option(help: "Events/s the noisy tenant publishes to its subscriber that never answers (pubsub scenario).")
    var pubsubFloodRate: Double = 2000

    @Option(help: "Connections (apps) the pubsub scenario's paced publishers are spread over.")
    var pubsubPublishers = 4

    @Option(help: "Seconds of each pubsub phase when --duration is not given.")
    var pubsubDuration: Double = 5

    @Option(help: "Distinct keys each caller cycles through.")
    var keys = 64

    @Option(help: "Event-loop threads of the bench's client.")
    var clientThreads = 1

    @Option(
        help: """
            Seconds the whole run may spend waiting for other processes to use less than 0.1 cores before a phase, \
            and re-running phases they disturbed (0: neither). Other load is reported per phase either way.
            """)
    var patience: Double = 120

    @Option(help: "Runs of a phase at most, while other processes disturb it.")
    var attempts = 3

    @Option(
        help: """
            The backend server's process (redis-server, or PostgreSQL's postmaster) of the get-/save-redis and \
            -postgresql scenarios: its CPU, with its children's, is read beside hangard's and is not counted as other \
            processes' load.
            """)
    var backendPID: Int32?

    func validate() throws {
        guard apps >= 1 else { throw ValidationError("--apps must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        if let connectApps, !(1...apps).contains(connectApps) {
            throw ValidationError("--connect-apps must be between 1 and --apps (\(apps))")
        }
        guard memoryApps >= 2, (1...memoryApps).contains(memoryConnected) else {
            throw ValidationError("--memory-apps must be at least 2, --memory-connected between 1 and --memory-apps")
        }
        guard calls >= 1, callsPerCaller >= 1, rounds >= 1, attempts >= 1 else {
            throw ValidationError("--calls, --calls-per-caller, --rounds and --attempts must be positive")
        }
        guard (duration ?? 1) > 0, warmup >= 0, patience >= 0 else {
            throw ValidationError("--duration must be positive, --warmup and --patience not negative")
        }
        guard valueBytes >= 0, keys >= 1, clientThreads >= 1 else {
            throw ValidationError("--value-bytes must not be negative, --keys and --client-threads must be positive")
        }
        if scenario.contains(.pubsub) {
            guard apps >= 2, pubsubPublishers >= 1 else {
                throw ValidationError("the pubsub scenario needs --apps of at least 2 and --pubsub-publishers of 1")
            }
            guard scenario.contains(.publishSQLite) || (pubsubRate ?? 0) > 0 else {
                throw ValidationError("the pubsub scenario needs the publish-sqlite scenario or --pubsub-rate")
            }
            guard pubsubLowRate > 0, pubsubFloodRate > 0, pubsubDuration > 0 else {
                throw ValidationError("--pubsub-low-rate, --pubsub-flood-rate and --pubsub-duration must be positive")
            }
        }
        if scenario.contains(.stream) || scenario.contains(.all) {
            guard (8...EchoStreamSender.maxPayloadBytes).contains(valueBytes) else {
                throw ValidationError(
                    "the stream scenario's messages carry their index: --value-bytes must be between 8 and "
                        + "\(EchoStreamSender.maxPayloadBytes)")
            }
            guard streamSlowRate > 0, streamDuration > 0 else {
                throw ValidationError("--stream-slow-rate and --stream-duration must be positive")
            }
        }
    }

    func run() async throws {
        let selected = Set(scenario.contains(.all) ? BenchScenario.all13 + scenario.filter(\.isPubSub) : scenario)
        let needsDaemon = selected.contains { $0.needsDaemon }
        if needsDaemon || selected.contains(.memory), !FileManager.default.isExecutableFile(atPath: common.hangard) {
            throw BenchError(
                "no hangard at \(common.hangard); build it (swift build -c release --product hangard) or pass --hangard"
            )
        }
        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()),
            command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(),
            options: BenchReport.Options(
                apps: apps, concurrency: concurrency, connectApps: appsConnected,
                sequentialCalls: duration == nil ? calls : nil,
                concurrentCallsPerCaller: duration == nil ? callsPerCaller : nil, durationSeconds: duration,
                warmupSeconds: warmup, rounds: rounds, valueBytes: valueBytes, keysPerCaller: keys,
                clientThreads: clientThreads, patienceSeconds: patience, attempts: attempts))
        let invoke = selected.contains(.invoke)
        let fixture = try BenchFixture.create(
            apps: apps, resourcesSource: needsDaemon ? common.resources : nil,
            callee: selected.contains { $0.needsCallee }, pusher: selected.contains(.pubsub))
        if selected.contains(.pubsub) { try addNoisyTenant(to: fixture) }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: clientThreads)
        let budget = PatienceBudget(.milliseconds(Int64(patience * 1000)))
        var servers: [BenchServer] = []
        var stream: StreamScenario?
        var pubsub: PubSubScenario?
        var push: PushReceiver?
        do {
            // Before hangard, so that the app `pusher` answers from the start.
            if selected.contains(.pubsub) { push = try await PushReceiver.start(socket: fixture.pushSocket) }
            // First, while no other hangard runs: PSS divides shared pages among the processes that map them.
            if selected.contains(.memory) {
                report.memory = try await MemoryFootprint(
                    hangard: common.hangard, resources: common.resources, declared: memoryApps,
                    connected: memoryConnected,
                    keep: common.keep
                ).measure(group: group)
            }
            if needsDaemon {
                servers.append(
                    try await startDaemon(fixture: fixture, group: group, selected: selected, budget: budget))
            }
            if selected.contains(where: \.needsEchoServer) {
                servers.append(
                    try await startEcho(fixture: fixture, group: group, budget: budget, echo: selected.contains(.echo)))
            }
            if invoke { try await addInvocationLoads(to: &servers) }
            if selected.contains(.stream) {
                stream = try await prepareStream(servers: servers, fixture: fixture, group: group, budget: budget)
                report.streamPhases = []
            }
            if selected.contains(.pubsub) {
                pubsub = try await preparePubSub(
                    servers: servers, fixture: fixture, group: group, push: push!, budget: budget)
                report.pubsubPhases = []
            }
            for round in 1...rounds where !servers.isEmpty {
                if rounds > 1 { progress("round \(round) of \(rounds)") }
                for server in servers {
                    for load in server.loads {
                        report.allPhases += try await runPhases(load, on: server, round: round)
                    }
                }
                if let stream { report.streamPhases! += try await stream.runRound(round) }
                if let pubsub {
                    report.pubsubPhases! += try await pubsub.runRound(
                        round, sqliteRate: Self.sqlitePublishRate(report.allPhases, round: round))
                }
            }
            await stream?.close()
            stream = nil
            await pubsub?.close()
            pubsub = nil
            await push?.stop()
            push = nil
            for index in servers.indices {
                try servers[index].recordAfterLoad()
                await servers[index].stop()
                let info = servers[index].info
                progress(
                    "\(servers[index].generator.serverName) stopped in \(Self.format(info.shutdownSeconds ?? 0, 2)) s, "
                        + "exit status \(info.exitStatus.map(String.init) ?? "killed")")
            }
        } catch {
            await stream?.close()
            await pubsub?.close()
            await push?.stop()
            for server in servers {
                _ = await server.process.terminate(timeout: .seconds(10))
                await server.closeConnections()
            }
            try? await group.shutdownGracefully()
            if !common.keep { fixture.remove() }
            throw error
        }
        try await group.shutdownGracefully()
        report.daemon = servers.first { $0.generator.serverName == "hangard" }?.info
        report.echo = servers.first { $0.generator.serverName == "echo" }?.info
        report.phases = PhaseResult.medians(report.allPhases)
        report.streaming = report.streamPhases.flatMap { StreamingSummary.measure($0, payloadBytes: valueBytes) }
        report.pubsub = PubSubSummary.measure(phases: report.allPhases, delivery: report.pubsubPhases ?? [])
        report.checkTargets()
        try common.publish(ResultTable.render(report), report)
        common.finish(fixture)
    }

    // MARK: Phases

    /// The sequential phase (one caller, on the first connection), then the concurrent one.
    private func runPhases(_ load: LoadGenerator.Load, on server: BenchServer, round: Int) async throws -> [PhaseResult]
    {
        let sequential: PhaseLength = duration.map { .seconds($0) } ?? .calls(calls)
        let concurrent: PhaseLength = duration.map { .seconds($0) } ?? .calls(callsPerCaller * concurrency)
        var phases = [(callers: 1, length: sequential)]
        if concurrency > 1 { phases.append((concurrency, concurrent)) }
        var results: [PhaseResult] = []
        for phase in phases {
            var result = try await server.generator.measure(
                load, callers: phase.callers, connections: server.connections(callers: phase.callers),
                warmup: .seconds(warmup), length: phase.length)
            result.round = round
            progress(
                "\(result.server) \(result.label): \(result.calls) calls, "
                    + "\(Self.format(result.callsPerSecond, 0)) calls/s, p50 \(Self.format(result.latency.p50, 1)) µs, "
                    + "p99 \(Self.format(result.latency.p99, 1)) µs, "
                    + "server \(Self.format(result.serverCPUMicrosPerCall, 1)) µs CPU/call"
                    + (result.calleeCPUMicrosPerCall.map { ", callee/backend \(Self.format($0, 1)) µs CPU/call" } ?? "")
                    + (result.errors > 0 ? ", \(result.errors) errors (\(result.firstError ?? ""))" : ""))
            results.append(result)
        }
        return results
    }

    /// The `stream` scenario on the running hangard and echo server (see `StreamScenario.prepare`).
    private func prepareStream(
        servers: [BenchServer], fixture: BenchFixture, group: any EventLoopGroup, budget: PatienceBudget
    ) async throws -> StreamScenario {
        guard let daemon = servers.first(where: { $0.generator.serverName == "hangard" }),
            let echo = servers.first(where: { $0.generator.serverName == "echo" })
        else { throw BenchError("the stream scenario needs both hangard and the echo server") }
        return try await StreamScenario.prepare(
            fixture: fixture, group: group, hangardPID: daemon.process.pid, echoPID: echo.process.pid,
            payloadBytes: valueBytes, slowRate: streamSlowRate, warmup: warmup, duration: duration ?? streamDuration,
            keys: keys, patience: budget, attempts: attempts)
    }

    /// The apps the concurrent callers are spread over.
    var appsConnected: Int { connectApps ?? min(concurrency, apps) }

    func progress(_ line: String) { TextTable.progress(line) }

    static func format(_ value: Double, _ decimals: Int) -> String { TextTable.format(value, decimals) }
}
