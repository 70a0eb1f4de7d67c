import ArgumentParser
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// `hangar-bench sidecar`: node versus sidecar. The same workload, `--apps` apps each with one open-loop paced
/// caller (`PacedCaller`) alternating GetState and SaveState, is served first by one hangard declaring every app
/// (`node`), then by one hangard per app (`sidecar`: Dapr's model, each with its own tenancy, resources, socket
/// root and data directory; all started before measuring). Over the same measured window it reads every process's
/// memory (RSS, PSS, USS) and CPU from `/proc`, and the client's latencies; then reports sidecar ÷ node.
///
/// On a network backend (issue 15: `--store redisstore` with `--resources` holding a `state.redis` component, or a
/// `state.postgresql` one), `--sidecar-resources` gives the sidecars their own component YAML (Dapr's default pool
/// size where the node keeps Hangar's), `--connections-command` counts the server's connections through both
/// models (from before the bench connects to the end of the window), and `--backend-pid` reads the server's CPU.
struct SidecarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sidecar",
        abstract: "Compare one hangard serving every app with one hangard per app (the sidecar model), same load.")

    @OptionGroup var common: HangardOptions

    @Option(help: "Apps, each with one connection and one paced caller.")
    var apps = 50

    @Option(help: "Calls a second each app's caller makes, alternating GetState and SaveState.")
    var rate: Double = 100

    @Option(help: "The state store the calls use.")
    var store = "memstore"

    @Option(help: "Seconds measured per model.")
    var duration: Double = 20

    @Option(help: "Seconds of unmeasured calls before each window.")
    var warmup: Double = 2

    @Option(help: "Distinct keys each app's caller cycles through.")
    var keys = 64

    @Option(help: "Bytes in each stored value.")
    var valueBytes = 100

    @Option(help: "Seconds the run may spend waiting, before a model, for other processes to use less than 0.1 cores.")
    var patience: Double = 60

    @Option(help: "Directory of the Component YAML each sidecar loads (default: --resources, as the node).")
    var sidecarResources: String?

    @Option(
        help: ArgumentHelp(
            "A shell command printing the backend server's connection count, run through each model.",
            discussion: """
                Run with /bin/sh -c every --connections-interval seconds from the hangards' start to the end of the \
                window, e.g. "redis-cli -p 6379 client list | grep -c name=hangard:state:redisstore".
                """))
    var connectionsCommand: String?

    @Option(help: "Seconds between two counts of --connections-command.")
    var connectionsInterval: Double = 0.5

    @Option(help: "The backend server's process (its CPU, with its children's, is read over each window).")
    var backendPID: Int32?

    func validate() throws {
        guard apps >= 1, keys >= 1 else { throw ValidationError("--apps and --keys must be positive") }
        guard connectionsInterval > 0 else { throw ValidationError("--connections-interval must be positive") }
        guard rate > 0, duration > 0, warmup >= 0, patience >= 0, valueBytes >= 0 else {
            throw ValidationError(
                "--rate and --duration must be positive; --warmup, --patience and --value-bytes not negative")
        }
    }

    func run() async throws {
        // The node hangard binds two sockets per app and accepts one connection per app; the bench holds as many.
        try FileDescriptorLimit.ensure(3 * apps + 256, for: "hangar-bench sidecar with \(apps) apps")
        var report = SidecarReport(
            date: ISO8601DateFormatter().string(from: Date()), command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(),
            options: SidecarReport.Options(
                apps: apps, ratePerApp: rate, store: store, durationSeconds: duration, warmupSeconds: warmup,
                keys: keys, valueBytes: valueBytes, resources: common.resources,
                sidecarResources: sidecarResources ?? common.resources, connectionsCommand: connectionsCommand))
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let budget = PatienceBudget(.milliseconds(Int64(patience * 1000)))
        do {
            for name in ["node", "sidecar"] {
                report.models.append(try await measure(name, group: group, budget: budget))
            }
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
        report.evaluate()
        try common.publish(report.render(), report)
    }

    // MARK: Models

    /// The fixtures of a model: one declaring every app (node), or one per app (sidecar); app `i` is `app-<i>` of
    /// tenant `bench` either way.
    private func fixtures(_ name: String) throws -> [BenchFixture] {
        if name == "node" { return [try BenchFixture.create(apps: apps, resourcesSource: common.resources)] }
        let resources = sidecarResources ?? common.resources
        var fixtures: [BenchFixture] = []
        do {
            for index in 0..<apps {
                fixtures.append(
                    try BenchFixture.create(
                        tenants: [
                            BenchTenant(
                                namespace: BenchFixture.namespace, apps: [BenchFixture.appID(index)],
                                quotas: BenchTenant.unlimited)
                        ],
                        resourcesSource: resources))
            }
            return fixtures
        } catch {
            for fixture in fixtures { fixture.remove() }
            throw error
        }
    }

    /// Starts the model's hangards, measures the workload on them, and stops them (also on failure).
    private func measure(_ name: String, group: any EventLoopGroup, budget: PatienceBudget) async throws
        -> SidecarReport.Model
    {
        let fixtures = try fixtures(name)
        let sampler = connectionsCommand.map {
            ConnectionSampler(command: $0, interval: .milliseconds(Int64(connectionsInterval * 1000)))
        }
        let fleet: HangardFleet
        do {
            fleet = try await HangardFleet.start(executable: common.hangard, fixtures: fixtures)
        } catch {
            _ = await sampler?.stop()
            if !common.keep { for fixture in fixtures { fixture.remove() } }
            throw error
        }
        TextTable.progress(
            "\(name): \(fleet.processes.count) hangard(s) ready in \(TextTable.format(fleet.secondsToStart, 2)) s")
        var connections: [GRPCClientConnection] = []
        do {
            try await Task.sleep(for: .seconds(1))
            let idle = MemorySample.sum(try fleet.pids.map { try MemorySample.read(pid: $0) })
            let loadFrom = NIODeadline.now().uptimeNanoseconds
            // App i's socket: in the node's one fixture, or in the i-th sidecar's.
            for index in 0..<apps {
                let fixture = fixtures.count == 1 ? fixtures[0] : fixtures[index]
                connections.append(
                    try await GRPCClientConnection.connect(unixSocket: fixture.grpcSocket(app: index), group: group))
            }
            let requests = try await prepare(connections)
            var model = try await window(
                name, fleet: fleet, idle: idle, connections: connections, requests: requests, budget: budget)
            if let sampler {
                let (samples, error) = await sampler.stop()
                model.backendConnections = ConnectionCounts(
                    samples, loadFrom: loadFrom, measureFrom: model.measuredFrom ?? loadFrom, error: error)
                if let counts = model.backendConnections {
                    TextTable.progress(
                        "\(name): backend connections \(counts.beforeLoad.map(String.init) ?? "-") before load, peak "
                            + "\(counts.peak), steady \(counts.steadyMedian.map(String.init) ?? "-") (\(counts.samples) counts)"
                    )
                }
                if let error { TextTable.progress("\(name): connections command: \(error)") }
            }
            await GRPCClientConnection.close(connections)
            let killed = await fleet.stop()
            TextTable.progress("\(name): stopped\(killed > 0 ? ", \(killed) killed after 10 s" : "")")
            if common.keep {
                TextTable.progress("\(name): configs and logs kept in \(fixtures.map(\.root).joined(separator: " "))")
            } else {
                fleet.removeFixtures()
            }
            return model
        } catch {
            _ = await sampler?.stop()
            await GRPCClientConnection.close(connections)
            await fleet.stop()
            if !common.keep { fleet.removeFixtures() }
            throw error
        }
    }

    /// Stores each app's keys (one bulk SaveState on its connection), reads one back, and returns each app's
    /// requests: GetState and SaveState of its keys, alternating.
    private func prepare(_ connections: [GRPCClientConnection]) async throws -> [[GRPCClientRequest]] {
        let value = BenchRequests.value(bytes: valueBytes)
        var requests: [[GRPCClientRequest]] = []
        for (app, connection) in connections.enumerated() {
            let keys = (0..<keys).map { BenchRequests.key(caller: app, index: $0) }
            _ = try await connection.unary(
                path: BenchRequests.saveStatePath,
                message: try BenchRequests.saveState(store: store, keys: keys, value: value)
            ).get()
            requests.append(
                try keys.flatMap { key in
                    [
                        GRPCClientRequest(
                            path: BenchRequests.getStatePath,
                            message: try BenchRequests.getState(store: store, key: key)),
                        GRPCClientRequest(
                            path: BenchRequests.saveStatePath,
                            message: try BenchRequests.saveState(store: store, keys: [key], value: value)),
                    ]
                })
        }
        let readBack = try await connections[0].call(requests[0][0]).get()
        guard try BenchRequests.decodeGetState(readBack) == value else {
            throw BenchError("GetState on \(store) did not return the value just saved")
        }
        return requests
    }

    /// The paced workload: a warm-up, then the measured window, with every process's CPU read at both ends and its
    /// memory at the end. `idle` is the model's memory before the bench connected.
    private func window(
        _ name: String, fleet: HangardFleet, idle: MemorySample, connections: [GRPCClientConnection],
        requests: [[GRPCClientRequest]], budget: PatienceBudget
    ) async throws -> SidecarReport.Model {
        if !budget.isExhausted {
            let busy = try await budget.waitForQuiet(threshold: 0.1, limit: .seconds(20))
            if busy >= 0.1 {
                TextTable.progress("other processes keep \(TextTable.format(busy, 2)) cores busy; measuring anyway")
            }
        }
        let nanosecondsPerSecond = 1_000_000_000.0
        // Leave the callers a few milliseconds to be created before their first call is due.
        let start = NIODeadline.now().uptimeNanoseconds + 20_000_000
        let measureFrom = start + UInt64(warmup * nanosecondsPerSecond)
        let end = measureFrom + UInt64(duration * nanosecondsPerSecond)
        let futures = PacedCaller.start(
            on: connections, requests: requests, rate: rate * Double(apps),
            schedule: PacedSchedule(start: start, measureFrom: measureFrom, end: end))

        try await PacedSchedule.sleep(until: measureFrom)
        let systemBefore = SystemCPUSample.read()
        let before = try fleet.pids.map { try ProcessSample.read(pid: $0) }
        let backendBefore = backendPID.flatMap(ProcessSample.treeCPUMicros(pid:))
        let benchBefore = ProcessSample.ownCPUMicros()
        let sampledFrom = NIODeadline.now().uptimeNanoseconds
        try await PacedSchedule.sleep(until: end)
        let sampledUntil = NIODeadline.now().uptimeNanoseconds
        let benchAfter = ProcessSample.ownCPUMicros()
        let backendAfter = backendPID.flatMap(ProcessSample.treeCPUMicros(pid:))
        let after = try fleet.pids.map { try ProcessSample.read(pid: $0) }
        let systemAfter = SystemCPUSample.read()
        let loaded = MemorySample.sum(try fleet.pids.map { try MemorySample.read(pid: $0) })

        var outcomes: [PacedOutcome] = []
        for future in futures { outcomes.append(try await future.get()) }
        let traffic = PacedTraffic(PacedOutcome.merged(outcomes), seconds: duration)
        let seconds = Double(sampledUntil - sampledFrom) / nanosecondsPerSecond
        let micros = zip(before, after).reduce(0) { $0 + ProcessSample.cpuMicros(from: $1.0, to: $1.1) }
        let benchMicros = benchAfter - benchBefore
        var backendMicros: Double?
        if let backendBefore, let backendAfter { backendMicros = backendAfter - backendBefore }
        let (otherCores, stealPercent) = SystemCPUSample.otherLoad(
            from: systemBefore, to: systemAfter, knownMicros: micros + benchMicros + (backendMicros ?? 0),
            seconds: seconds)
        var model = SidecarReport.Model(
            name: name, processes: fleet.processes.count, secondsToStart: fleet.secondsToStart,
            idle: MemoryReport.Footprint(idle, declared: apps, connected: 0),
            loaded: MemoryReport.Footprint(loaded, declared: apps, connected: apps),
            cores: micros / 1_000_000 / seconds,
            cpuMicrosPerCall: micros / Double(max(1, traffic.issued - traffic.unanswered)), traffic: traffic,
            benchCores: benchMicros / 1_000_000 / seconds, otherCores: otherCores, stealPercent: stealPercent)
        model.measuredFrom = measureFrom
        if let backendMicros {
            model.backendCores = backendMicros / 1_000_000 / seconds
            model.backendCPUMicrosPerCall = backendMicros / Double(max(1, traffic.issued - traffic.unanswered))
        }
        TextTable.progress(
            "\(name): \(TextTable.format(traffic.okPerSecond, 0)) calls/s, p50 "
                + "\(TextTable.format(traffic.latency.p50, 1)) µs, p99 \(TextTable.format(traffic.latency.p99, 1)) µs, "
                + "\(traffic.errors) errors; RSS \(TextTable.format(model.loaded.rssMB, 1)) MB, PSS "
                + "\(TextTable.format(model.loaded.pssMB, 1)) MB, \(TextTable.format(model.cores, 3)) cores")
        return model
    }
}
