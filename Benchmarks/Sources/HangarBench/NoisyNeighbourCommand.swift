import ArgumentParser
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// A state call a paced load makes: GetState or SaveState of one key.
enum StateOperation: String, ExpressibleByArgument, Sendable {
    case get
    case save

    var name: String { self == .get ? "GetState" : "SaveState" }

    /// One pre-encoded request per key, in order.
    func requests(store: String, keys: [String], value: Data) throws -> [ByteBuffer] {
        try keys.map { key in
            switch self {
            case .get: try BenchRequests.getState(store: store, key: key)
            case .save: try BenchRequests.saveState(store: store, keys: [key], value: value)
            }
        }
    }

    var path: String { self == .get ? BenchRequests.getStatePath : BenchRequests.saveStatePath }
}

/// `hangar-bench noisy-neighbour`: does one tenant flooding the node hurt another? hangard serves two tenants on
/// one shared state store: `noisy` (one app, quota Q calls/s, burst Q/10) and `steady` (one app, quotas far above
/// its load). Open-loop paced load (`PacedCaller`): first the steady tenant alone (phase `quiet`), then the same
/// with the noisy tenant offering `--flood-factor` × Q calls/s (phase `noisy`). Reports the steady tenant's
/// latency and errors, the flood's offered, accepted and refused rates, and hangard's CPU, per phase.
struct NoisyNeighbourCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "noisy-neighbour",
        abstract: "Measure one tenant's latency while another floods hangard far over its quota.")

    static let noisyNamespace = "noisy"
    static let noisyApp = "flood"
    static let steadyNamespace = "steady"
    static let steadyApp = "calm"

    @OptionGroup var common: HangardOptions

    @Option(help: "The noisy tenant's requestsPerSecond quota (Q); its burst is max(1, Q/10).")
    var quota = 200

    @Option(help: "The noisy tenant offers this many times its quota.")
    var floodFactor = 10

    @Option(help: "Connections the noisy tenant's calls are spread over.")
    var floodConnections = 16

    @Option(help: "The noisy tenant's call: get (GetState) or save (SaveState).")
    var floodOperation = StateOperation.save

    @Option(help: "Client event-loop threads for the noisy tenant (the steady tenant always has its own).")
    var floodThreads = 1

    @Option(
        help: ArgumentHelp(
            "RST_STREAM frames (and stream errors) a flood connection tolerates per 30 s before it closes itself.",
            discussion: """
                The default is swift-nio-http2's own, as a real client has it. Hangard resets a refused call's \
                stream only when the rest of the request has not arrived by the end of the read, so refused \
                clients stay under this limit; before that change they dropped their own connections \
                (ExcessiveRSTFrames).
                """))
    var clientResetLimit = 200

    @Option(help: "The steady tenant's calls a second.")
    var steadyRate: Double = 500

    @Option(help: "Connections the steady tenant's calls are spread over.")
    var steadyConnections = 4

    @Option(help: "The steady tenant's call: get (GetState) or save (SaveState).")
    var operation = StateOperation.get

    @Option(help: "The state store both tenants use (shared component pool).")
    var store = "sqlstore"

    @Option(help: "Seconds measured in each phase.")
    var duration: Double = 10

    @Option(help: "Seconds of unmeasured steady calls before each window.")
    var warmup: Double = 1

    @Option(help: "Seconds the flood runs before the window, so that its burst is spent.")
    var floodLead: Double = 2

    @Option(help: "Distinct keys each connection cycles through.")
    var keys = 64

    @Option(help: "Bytes in each stored value.")
    var valueBytes = 100

    @Option(help: "Seconds the run may spend waiting, before a phase, for other processes to use less than 0.1 cores.")
    var patience: Double = 60

    func validate() throws {
        guard quota >= 1, floodFactor >= 1, floodConnections >= 1, steadyConnections >= 1, floodThreads >= 1 else {
            throw ValidationError(
                "--quota, --flood-factor, --flood-connections, --steady-connections and --flood-threads "
                    + "must be positive")
        }
        guard steadyRate > 0, duration > 0, warmup >= 0, floodLead >= 0, patience >= 0 else {
            throw ValidationError(
                "--steady-rate and --duration must be positive; --warmup, --flood-lead and --patience not negative")
        }
        guard keys >= 1, valueBytes >= 0, clientResetLimit >= 1 else {
            throw ValidationError("--keys and --client-reset-limit must be positive, --value-bytes not negative")
        }
    }

    /// The connections of both tenants and the pre-encoded requests each connection cycles through.
    private struct Clients {
        var steady: [GRPCClientConnection]
        var steadyRequests: [[ByteBuffer]]
        var flood: [GRPCClientConnection]
        var floodRequests: [ByteBuffer]

        func close() async {
            await GRPCClientConnection.close(steady)
            await GRPCClientConnection.close(flood)
        }
    }

    func run() async throws {
        let burst = max(1, quota / 10)
        let floodRate = Double(quota * floodFactor)
        var report = NoisyNeighbourReport(
            date: ISO8601DateFormatter().string(from: Date()), command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(),
            options: NoisyNeighbourReport.Options(
                quota: quota, burst: burst, floodFactor: floodFactor, floodRate: floodRate,
                floodConnections: floodConnections, floodOperation: floodOperation.name, floodThreads: floodThreads,
                steadyRate: steadyRate, steadyConnections: steadyConnections, steadyOperation: operation.name,
                store: store, durationSeconds: duration, warmupSeconds: warmup, floodLeadSeconds: floodLead,
                keys: keys, valueBytes: valueBytes, clientResetLimit: clientResetLimit),
            hangardSecondsToReady: 0)
        let fixture = try BenchFixture.create(
            tenants: [
                BenchTenant(
                    namespace: Self.noisyNamespace, apps: [Self.noisyApp],
                    quotas: ["requestsPerSecond": quota, "burst": burst]),
                BenchTenant(namespace: Self.steadyNamespace, apps: [Self.steadyApp], quotas: BenchTenant.unlimited),
            ],
            resourcesSource: common.resources)
        // The steady tenant's client has an event loop of its own, so that the flood's answers never queue in
        // front of its own on the client side.
        let steadyGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let floodGroup = MultiThreadedEventLoopGroup(numberOfThreads: floodThreads)
        var process: ManagedProcess?
        var clients: Clients?
        do {
            let started = try await ManagedProcess.startHangard(executable: common.hangard, fixture: fixture)
            process = started.process
            report.hangardSecondsToReady = started.secondsToReady
            TextTable.progress(
                "hangard ready in \(TextTable.format(started.secondsToReady, 2)) s (pid \(started.process.pid))")
            clients = try await connect(fixture: fixture, steadyGroup: steadyGroup, floodGroup: floodGroup)
            let budget = PatienceBudget(.milliseconds(Int64(patience * 1000)))
            for flooding in [false, true] {
                try await Task.sleep(for: .seconds(1))
                report.phases.append(
                    try await measure(flooding: flooding, clients: clients!, pid: started.process.pid, budget: budget))
            }
        } catch {
            if let process { _ = await process.terminate(timeout: .seconds(10)) }
            await clients?.close()
            try? await steadyGroup.shutdownGracefully()
            try? await floodGroup.shutdownGracefully()
            if !common.keep { fixture.remove() }
            throw error
        }
        if let process {
            let (status, seconds) = await process.terminate(timeout: .seconds(30))
            let exit = status.map(String.init) ?? "killed"
            TextTable.progress("hangard stopped in \(TextTable.format(seconds, 2)) s, exit status \(exit)")
        }
        await clients?.close()
        try await steadyGroup.shutdownGracefully()
        try await floodGroup.shutdownGracefully()
        report.evaluate()
        try common.publish(report.render(), report)
        common.finish(fixture)
    }

    // MARK: Set-up

    /// Opens every connection and stores the keys both tenants use: the steady tenant's through one bulk
    /// SaveState per connection (read back once), the noisy tenant's (one key set, shared by its connections)
    /// through one bulk SaveState, retried while the quota refuses it.
    private func connect(
        fixture: BenchFixture, steadyGroup: any EventLoopGroup, floodGroup: any EventLoopGroup
    ) async throws -> Clients {
        let steadySocket = fixture.grpcSocket(namespace: Self.steadyNamespace, app: Self.steadyApp)
        let floodSocket = fixture.grpcSocket(namespace: Self.noisyNamespace, app: Self.noisyApp)
        var clients = Clients(steady: [], steadyRequests: [], flood: [], floodRequests: [])
        do {
            for _ in 0..<steadyConnections {
                clients.steady.append(
                    try await GRPCClientConnection.connect(unixSocket: steadySocket, group: steadyGroup))
            }
            for _ in 0..<floodConnections {
                clients.flood.append(
                    try await GRPCClientConnection.connect(
                        unixSocket: floodSocket, group: floodGroup, resetLimit: clientResetLimit))
            }
            let value = BenchRequests.value(bytes: valueBytes)
            let steadyKeys = (0..<steadyConnections).map { connection in
                (0..<keys).map { BenchRequests.key(caller: connection, index: $0) }
            }
            for (connection, keys) in zip(clients.steady, steadyKeys) {
                _ = try await connection.unary(
                    path: BenchRequests.saveStatePath,
                    message: try BenchRequests.saveState(store: store, keys: keys, value: value)
                ).get()
            }
            let readBack = try await clients.steady[0].unary(
                path: BenchRequests.getStatePath,
                message: try BenchRequests.getState(store: store, key: steadyKeys[0][0])
            ).get()
            guard try BenchRequests.decodeGetState(readBack) == value else {
                throw BenchError("GetState on \(store) did not return the value just saved")
            }
            let floodKeys = (0..<keys).map { "flood-\($0)" }
            try await saveWithinQuota(
                try BenchRequests.saveState(store: store, keys: floodKeys, value: value), on: clients.flood[0])
            clients.steadyRequests = try steadyKeys.map { try operation.requests(store: store, keys: $0, value: value) }
            clients.floodRequests = try floodOperation.requests(store: store, keys: floodKeys, value: value)
            return clients
        } catch {
            await clients.close()
            throw error
        }
    }

    /// One SaveState on the noisy tenant's connection, retried for up to 10 s while its quota refuses it.
    private func saveWithinQuota(_ message: ByteBuffer, on connection: GRPCClientConnection) async throws {
        for attempt in 1...20 {
            do {
                _ = try await connection.unary(path: BenchRequests.saveStatePath, message: message).get()
                return
            } catch GRPCCallError.status(PacedCaller.resourceExhausted, _) where attempt < 20 {
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    // MARK: Phases

    /// One phase: the steady tenant's calls (after `--warmup`), with or without the flood (started `--flood-lead`
    /// before the window), and hangard's CPU over the measured window.
    private func measure(
        flooding: Bool, clients: Clients, pid: pid_t, budget: PatienceBudget
    ) async throws -> NoisyNeighbourReport.Phase {
        let name = flooding ? "noisy" : "quiet"
        if !budget.isExhausted {
            let busy = try await budget.waitForQuiet(threshold: 0.1, limit: .seconds(20))
            if busy >= 0.1 {
                TextTable.progress(
                    "other processes keep \(TextTable.format(busy, 2)) cores busy; measuring \(name) anyway")
            }
        }
        let nanosecondsPerSecond = 1_000_000_000.0
        // Leave the callers a few milliseconds to be created before their first call is due.
        let origin = NIODeadline.now().uptimeNanoseconds + 20_000_000
        let measureFrom = origin + UInt64(max(warmup, flooding ? floodLead : 0) * nanosecondsPerSecond)
        let end = measureFrom + UInt64(duration * nanosecondsPerSecond)
        let steadySchedule = PacedSchedule(
            start: measureFrom - UInt64(warmup * nanosecondsPerSecond), measureFrom: measureFrom, end: end)
        let steadyFutures = Self.startCallers(
            clients.steady, requests: clients.steadyRequests, path: operation.path, rate: steadyRate,
            schedule: steadySchedule)
        var floodFutures: [EventLoopFuture<PacedOutcome>] = []
        if flooding {
            floodFutures = Self.startCallers(
                clients.flood, requests: Array(repeating: clients.floodRequests, count: clients.flood.count),
                path: floodOperation.path, rate: Double(quota * floodFactor),
                schedule: PacedSchedule(start: origin, measureFrom: measureFrom, end: end))
        }

        try await PacedSchedule.sleep(until: measureFrom)
        let systemBefore = SystemCPUSample.read()
        let before = try ProcessSample.read(pid: pid)
        let benchBefore = ProcessSample.ownCPUMicros()
        let schedulerBefore = (daemon: SchedulerSample.read(pid: pid), bench: SchedulerSample.read(pid: getpid()))
        let sampledFrom = NIODeadline.now().uptimeNanoseconds
        try await PacedSchedule.sleep(until: end)
        let sampledUntil = NIODeadline.now().uptimeNanoseconds
        let schedulerAfter = (daemon: SchedulerSample.read(pid: pid), bench: SchedulerSample.read(pid: getpid()))
        let benchAfter = ProcessSample.ownCPUMicros()
        let after = try ProcessSample.read(pid: pid)
        let systemAfter = SystemCPUSample.read()

        var steadyOutcomes: [PacedOutcome] = []
        for future in steadyFutures { steadyOutcomes.append(try await future.get()) }
        var floodOutcomes: [PacedOutcome] = []
        for future in floodFutures { floodOutcomes.append(try await future.get()) }

        let seconds = Double(end - measureFrom) / nanosecondsPerSecond
        let sampledSeconds = Double(sampledUntil - sampledFrom) / nanosecondsPerSecond
        let steady = NoisyNeighbourReport.Traffic(PacedOutcome.merged(steadyOutcomes), seconds: seconds)
        let flood = flooding ? NoisyNeighbourReport.Traffic(PacedOutcome.merged(floodOutcomes), seconds: seconds) : nil
        let answered = max(1, steady.issued - steady.unanswered + (flood.map { $0.issued - $0.unanswered } ?? 0))
        let daemonMicros = ProcessSample.cpuMicros(from: before, to: after)
        let benchMicros = benchAfter - benchBefore
        let (otherCores, stealPercent) = SystemCPUSample.otherLoad(
            from: systemBefore, to: systemAfter, knownMicros: daemonMicros + benchMicros, seconds: sampledSeconds)
        let phase = NoisyNeighbourReport.Phase(
            name: name, seconds: seconds, steady: steady, flood: flood,
            acceptedOverQuota: flood.map { $0.okPerSecond / Double(quota) },
            daemonCores: daemonMicros / 1_000_000 / sampledSeconds,
            daemonMicrosPerCall: daemonMicros / Double(answered),
            daemonContextSwitchesPerCall: Double(after.contextSwitches - before.contextSwitches) / Double(answered),
            daemonRSSMB: BenchServer.megabytes(after.rssKiB),
            daemonRunQueueMicrosPerCall: SchedulerSample.waitMicros(
                from: schedulerBefore.daemon, to: schedulerAfter.daemon) / Double(answered),
            benchRunQueueMicrosPerCall: SchedulerSample.waitMicros(
                from: schedulerBefore.bench, to: schedulerAfter.bench) / Double(answered),
            benchCores: benchMicros / 1_000_000 / sampledSeconds,
            otherCores: otherCores, stealPercent: stealPercent)
        var line =
            "\(name): steady \(TextTable.format(steady.okPerSecond, 0)) calls/s, p50 "
            + "\(TextTable.format(steady.latency.p50, 1)) µs, p99 \(TextTable.format(steady.latency.p99, 1)) µs, "
            + "\(steady.errors) errors"
        if let flood {
            line +=
                "; flood offered \(TextTable.format(flood.offeredPerSecond, 0))/s, accepted "
                + "\(TextTable.format(flood.okPerSecond, 1))/s, refused "
                + "\(TextTable.format(flood.refusedPerSecond, 0))/s"
        }
        line += "; hangard \(TextTable.format(phase.daemonCores, 3)) cores"
        TextTable.progress(line)
        return phase
    }

    /// Starts one paced caller per connection, sharing `rate` evenly and interleaved.
    private static func startCallers(
        _ connections: [GRPCClientConnection], requests: [[ByteBuffer]], path: String, rate: Double,
        schedule: PacedSchedule
    ) -> [EventLoopFuture<PacedOutcome>] {
        PacedCaller.start(
            on: connections, requests: requests.map { GRPCClientRequest.batch(path: path, $0) }, rate: rate,
            schedule: schedule)
    }
}
