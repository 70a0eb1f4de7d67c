import ArgumentParser
import Foundation
import NIOCore
import NIOPosix

/// `hangar-bench run` (the default): starts hangard with N apps and two state stores, measures memory, then
/// GetState and SaveState on each store with one caller and with many; then does the same with Hangar's gRPC
/// server and a trivial echo method as the baseline; prints a table and optionally writes JSON.
struct BenchRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Measure hangard: RSS, GetState/SaveState latency, throughput and daemon CPU per call.")

    @Option(help: "The hangard binary to start.")
    var hangard = ".build/release/hangard"

    @Option(help: "Directory of the Component YAML to load (stores 'memstore' and 'sqlstore').")
    var resources = "bench/resources"

    @Option(help: "What to measure (repeatable): \(BenchScenario.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scenario: [BenchScenario] = [.all]

    @Option(help: "Apps declared in the generated Tenant; each gets its own socket and, in the bench, one connection.")
    var apps = 100

    @Option(help: "Callers in the concurrent phases, spread round-robin over the app connections (1 skips them).")
    var concurrency = 32

    @Option(help: "Calls in each sequential phase.")
    var calls = 20_000

    @Option(help: "Calls per caller in each concurrent phase.")
    var callsPerCaller = 5_000

    @Option(help: "Run every phase for this many seconds instead of a number of calls.")
    var duration: Double?

    @Option(help: "Seconds of unmeasured calls before each phase.")
    var warmup: Double = 1

    @Option(help: "Bytes in each stored value and echo payload.")
    var valueBytes = 100

    @Option(help: "Distinct keys each caller cycles through.")
    var keys = 64

    @Option(help: "Event-loop threads of the bench's client.")
    var clientThreads = 1

    @Option(help: "Write every result as JSON to this path.")
    var json: String?

    @Flag(help: "Keep the temporary directory (configs, logs, SQLite file) instead of removing it.")
    var keep = false

    func validate() throws {
        guard apps >= 1 else { throw ValidationError("--apps must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard calls >= 1, callsPerCaller >= 1 else { throw ValidationError("--calls and --calls-per-caller must be positive") }
        guard (duration ?? 1) > 0, warmup >= 0 else { throw ValidationError("--duration must be positive, --warmup not negative") }
        guard valueBytes >= 0, keys >= 1, clientThreads >= 1 else {
            throw ValidationError("--value-bytes, --keys and --client-threads must be sensible")
        }
    }

    func run() async throws {
        let selected = Set(scenario.contains(.all) ? BenchScenario.allCases.filter { $0 != .all } : scenario)
        let needsDaemon = selected.contains { $0.needsDaemon }
        if needsDaemon, !FileManager.default.isExecutableFile(atPath: hangard) {
            throw BenchError("no hangard at \(hangard); build it (swift build -c release --product hangard) or pass --hangard")
        }
        var report = BenchReport(
            date: ISO8601DateFormatter().string(from: Date()),
            command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(),
            options: BenchReport.Options(
                apps: apps, concurrency: concurrency, sequentialCalls: duration == nil ? calls : nil,
                concurrentCallsPerCaller: duration == nil ? callsPerCaller : nil, durationSeconds: duration,
                warmupSeconds: warmup, valueBytes: valueBytes, keysPerCaller: keys, clientThreads: clientThreads))
        let fixture = try BenchFixture.create(apps: apps, resourcesSource: needsDaemon ? resources : nil)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: clientThreads)
        do {
            if needsDaemon { try await measureDaemon(&report, fixture: fixture, group: group, selected: selected) }
            if selected.contains(.echo) { try await measureEcho(&report, fixture: fixture, group: group) }
        } catch {
            try? await group.shutdownGracefully()
            if !keep { fixture.remove() }
            throw error
        }
        try await group.shutdownGracefully()
        report.checkTargets()
        print(ResultTable.render(report))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            let url = URL(fileURLWithPath: json)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try encoder.encode(report).write(to: url)
            print("results written to \(json)")
        }
        if keep { print("configs and logs kept in \(fixture.root)") } else { fixture.remove() }
    }

    // MARK: hangard

    private func measureDaemon(
        _ report: inout BenchReport, fixture: BenchFixture, group: any EventLoopGroup, selected: Set<BenchScenario>
    ) async throws {
        let process = try ManagedProcess.spawn(
            name: "hangard", executable: hangard,
            arguments: [
                "--tenancy", fixture.tenancy, "--resources", fixture.resources, "--socket-root", fixture.socketRoot,
                "--data-dir", fixture.dataDirectory, "--http-listen", "none", "--grpc-listen", "none",
                // "hangard ready" is logged at info; nothing is logged per call at info.
                "--log-level", "info",
            ],
            logPath: fixture.log("hangard"))
        var connections: [GRPCClientConnection] = []
        do {
            let secondsToReady = try await process.waitForLog("hangard ready", timeout: .seconds(120))
            progress("hangard ready in \(Self.format(secondsToReady, 2)) s with \(apps) apps (pid \(process.pid))")
            try await Task.sleep(for: .seconds(1))
            let idle = try ProcessSample.read(pid: process.pid)

            for index in 0..<apps {
                connections.append(try await GRPCClientConnection.connect(unixSocket: fixture.grpcSocket(app: index), group: group))
            }
            let firstCall = try BenchRequests.getState(store: "memstore", key: "absent")
            try await Self.callEach(connections, path: BenchRequests.getStatePath, message: firstCall)
            try await Task.sleep(for: .milliseconds(500))
            let connected = try ProcessSample.read(pid: process.pid)
            report.daemon = BenchReport.ServerProcess(
                path: hangard, apps: apps, secondsToReady: secondsToReady, idleRSSMB: Self.megabytes(idle.rssKiB),
                idleThreads: idle.threads, connectedRSSMB: Self.megabytes(connected.rssKiB),
                connectedThreads: connected.threads)
            progress(
                "hangard RSS: idle \(Self.format(Self.megabytes(idle.rssKiB), 1)) MB, "
                    + "\(apps) apps connected \(Self.format(Self.megabytes(connected.rssKiB), 1)) MB")

            let generator = LoadGenerator(serverPID: process.pid, serverName: "hangard")
            let stores: [(name: String, get: BenchScenario, save: BenchScenario)] = [
                ("memstore", .getMemory, .saveMemory), ("sqlstore", .getSQLite, .saveSQLite),
            ]
            for store in stores where selected.contains(store.get) || selected.contains(store.save) {
                let keySets = (0..<concurrency).map { caller in (0..<keys).map { BenchRequests.key(caller: caller, index: $0) } }
                let value = BenchRequests.value(bytes: valueBytes)
                try await prefill(store.name, keySets: keySets, value: value, connections: connections)
                if selected.contains(store.get) {
                    let load = LoadGenerator.Load(
                        operation: "GetState", store: store.name, path: BenchRequests.getStatePath,
                        requests: try keySets.map { keys in try keys.map { try BenchRequests.getState(store: store.name, key: $0) } })
                    try await runPhases(load, generator: generator, connections: connections, into: &report)
                }
                if selected.contains(store.save) {
                    let load = LoadGenerator.Load(
                        operation: "SaveState", store: store.name, path: BenchRequests.saveStatePath,
                        requests: try keySets.map { keys in
                            try keys.map { try BenchRequests.saveState(store: store.name, keys: [$0], value: value) }
                        })
                    try await runPhases(load, generator: generator, connections: connections, into: &report)
                }
            }
            let after = try ProcessSample.read(pid: process.pid)
            report.daemon?.afterLoadRSSMB = Self.megabytes(after.rssKiB)
            report.daemon?.peakRSSMB = Self.megabytes(after.peakRSSKiB)
        } catch {
            _ = await process.terminate(timeout: .seconds(10))
            for connection in connections { await connection.close() }
            throw error
        }
        // SIGTERM with every app still connected: the graceful drain is part of what is measured.
        let (status, seconds) = await process.terminate(timeout: .seconds(30))
        report.daemon?.shutdownSeconds = seconds
        report.daemon?.exitStatus = status
        progress("hangard stopped in \(Self.format(seconds, 2)) s, exit status \(status.map(String.init) ?? "killed")")
        for connection in connections { await connection.close() }
    }

    /// Stores every key the callers will use (one bulk SaveState per caller) and reads one back.
    private func prefill(
        _ store: String, keySets: [[String]], value: Data, connections: [GRPCClientConnection]
    ) async throws {
        var futures: [EventLoopFuture<ByteBuffer>] = []
        for (caller, keys) in keySets.enumerated() {
            let connection = connections[caller % connections.count]
            futures.append(
                connection.unary(
                    path: BenchRequests.saveStatePath,
                    message: try BenchRequests.saveState(store: store, keys: keys, value: value)))
        }
        for future in futures { _ = try await future.get() }
        let response = try await connections[0].unary(
            path: BenchRequests.getStatePath, message: try BenchRequests.getState(store: store, key: keySets[0][0])
        ).get()
        guard try BenchRequests.decodeGetState(response) == value else {
            throw BenchError("GetState on \(store) did not return the value just saved")
        }
    }

    // MARK: echo

    private func measureEcho(_ report: inout BenchReport, fixture: BenchFixture, group: any EventLoopGroup) async throws {
        let process = try ManagedProcess.spawn(
            name: "echo-server", executable: Self.ownExecutable(),
            arguments: ["echo-server", "--socket", fixture.echoSocket], logPath: fixture.log("echo"))
        var connections: [GRPCClientConnection] = []
        do {
            let secondsToReady = try await process.waitForLog(EchoServerCommand.readyMarker, timeout: .seconds(30))
            try await Task.sleep(for: .seconds(1))
            let idle = try ProcessSample.read(pid: process.pid)
            // As many connections as the hangard concurrent phases use, to the one echo socket.
            for _ in 0..<min(concurrency, apps) {
                connections.append(try await GRPCClientConnection.connect(unixSocket: fixture.echoSocket, group: group))
            }
            let payload = BenchRequests.value(bytes: valueBytes)
            let request = try BenchRequests.echo(payload: payload)
            try await Self.callEach(connections, path: BenchRequests.echoPath, message: request)
            let response = try await connections[0].unary(path: BenchRequests.echoPath, message: request).get()
            guard try BenchRequests.decodeEcho(response) == payload else { throw BenchError("echo returned another payload") }
            try await Task.sleep(for: .milliseconds(500))
            let connected = try ProcessSample.read(pid: process.pid)
            report.echo = BenchReport.ServerProcess(
                path: Self.ownExecutable() + " echo-server", apps: 1, secondsToReady: secondsToReady,
                idleRSSMB: Self.megabytes(idle.rssKiB), idleThreads: idle.threads,
                connectedRSSMB: Self.megabytes(connected.rssKiB), connectedThreads: connected.threads)

            let load = LoadGenerator.Load(
                operation: "Echo", store: nil, path: BenchRequests.echoPath,
                requests: Array(repeating: [request], count: concurrency))
            let generator = LoadGenerator(serverPID: process.pid, serverName: "echo")
            try await runPhases(load, generator: generator, connections: connections, into: &report)
            let after = try ProcessSample.read(pid: process.pid)
            report.echo?.afterLoadRSSMB = Self.megabytes(after.rssKiB)
            report.echo?.peakRSSMB = Self.megabytes(after.peakRSSKiB)
        } catch {
            _ = await process.terminate(timeout: .seconds(5))
            for connection in connections { await connection.close() }
            throw error
        }
        for connection in connections { await connection.close() }
        let (status, seconds) = await process.terminate(timeout: .seconds(10))
        report.echo?.shutdownSeconds = seconds
        report.echo?.exitStatus = status
    }

    // MARK: phases

    /// The sequential phase (one caller, the first connection), then the concurrent one.
    private func runPhases(
        _ load: LoadGenerator.Load, generator: LoadGenerator, connections: [GRPCClientConnection],
        into report: inout BenchReport
    ) async throws {
        let sequential: PhaseLength = duration.map { .seconds($0) } ?? .calls(calls)
        let concurrent: PhaseLength = duration.map { .seconds($0) } ?? .calls(callsPerCaller * concurrency)
        var phases = [(callers: 1, length: sequential)]
        if concurrency > 1 { phases.append((concurrency, concurrent)) }
        for phase in phases {
            let result = try await generator.measure(
                load, callers: phase.callers, connections: connections, warmup: .seconds(warmup), length: phase.length)
            progress(
                "\(result.server) \(result.label): \(result.calls) calls, \(Self.format(result.callsPerSecond, 0)) calls/s, "
                    + "p50 \(Self.format(result.latency.p50, 1)) µs, p99 \(Self.format(result.latency.p99, 1)) µs, "
                    + "server \(Self.format(result.serverCPUMicrosPerCall, 1)) µs CPU/call"
                    + (result.errors > 0 ? ", \(result.errors) errors (\(result.firstError ?? ""))" : ""))
            report.phases.append(result)
        }
    }

    /// One call on every connection, all at once.
    private static func callEach(_ connections: [GRPCClientConnection], path: String, message: ByteBuffer) async throws {
        let futures = connections.map { $0.unary(path: path, message: message) }
        for future in futures { _ = try await future.get() }
    }

    private static func ownExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    private func progress(_ line: String) {
        FileHandle.standardError.write(Data("· \(line)\n".utf8))
    }

    static func megabytes(_ kibibytes: Int) -> Double { Double(kibibytes) * 1024 / 1_000_000 }

    static func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }
}
