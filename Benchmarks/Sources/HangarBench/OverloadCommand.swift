import ArgumentParser
import Foundation
import Glibc
import NIOCore
import NIOPosix
import Synchronization

/// `hangar-bench overload` (issue 16, "memory is not bounded per node"): can tenants pin hangard's memory with
/// requests they never finish, and does that hurt a tenant that behaves? hangard serves `--attackers` attacking
/// tenants and one quiet tenant, none with quotas set (the defaults), on an in-memory state store. For each attack
/// shape (`AttackShape`), on a hangard of its own: the quiet tenant's paced GetState load alone (window `quiet`),
/// then with every attacker running the shape (`ramp`: its first seconds, `held`: holding what it got), then with
/// the attackers gone (`after`). Reports hangard's RSS once a second, the quiet tenant's latency per window beside
/// its `quiet` reference, and what each attacker got.
struct OverloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overload",
        abstract: "Measure hangard's RSS and a quiet tenant's latency while tenants pin memory with unfinished calls.")

    static let quietNamespace = "quiet"
    static let quietApp = "calm"
    static let attackerApp = "pin"

    static func attackerNamespace(_ index: Int) -> String { "attacker-\(index + 1)" }

    @OptionGroup var common: HangardOptions

    @Option(parsing: .upToNextOption, help: "The attack shapes to run, each on a fresh hangard.")
    var shapes: [AttackShape] = AttackShape.allCases

    @Option(help: "Attacking tenants (each with one app).")
    var attackers = 2

    @Option(help: "The message size each attacking stream's prefix declares.")
    var messageBytes = 4_000_000

    @Option(help: "Bytes of each message held back at first; one is trickled every --trickle-interval, never the last.")
    var holdBack = 64

    @Option(help: "Seconds between two trickled bytes on a stream (under hangard's request progress timeout).")
    var trickleInterval: Double = 4

    @Option(
        help: """
            Bytes trickled per stream every --trickle-interval (hangard counts 1 KiB per 10 s as progress: \
            --request-progress-bytes).
            """)
    var trickleBytes = 1

    @Option(help: "Seconds before the 'reopen' shape opens a stream again (or reconnects) after hangard ends one.")
    var reopenDelay: Double = 0.1

    @Option(help: "The quiet tenant's GetState calls a second.")
    var quietRate: Double = 500

    @Option(help: "Connections the quiet tenant's calls are spread over.")
    var quietConnections = 4

    @Option(help: "The state store the quiet tenant reads.")
    var store = "memstore"

    @Option(help: "Seconds measured before the attack (window 'quiet') and while it holds (window 'held').")
    var duration: Double = 20

    @Option(help: "Seconds from the attack's start to the 'held' window (window 'ramp').")
    var ramp: Double = 10

    @Option(help: "Seconds measured after the attackers closed their connections (window 'after').")
    var after: Double = 10

    @Option(help: "Seconds of unmeasured quiet calls before the 'quiet' window.")
    var warmup: Double = 2

    @Option(help: "Seconds between two samples of hangard's RSS.")
    var sampleInterval: Double = 1

    @Option(help: "Passed to hangard as --max-buffered-bytes (hangards before the buffer budget have no such flag).")
    var maxBufferedBytes: Int?

    @Option(help: "The container memory limit RSS is checked against, in MiB (the DaemonSet's).")
    var memoryLimitMib = 512

    @Option(help: "The RSS growth over the baseline the issue allows, in MB.")
    var rssGrowthBudget: Double = 300

    @Option(help: "hangard RSS, in MB, above which the bench stops the attack early (to spare a shared machine).")
    var rssCap: Double = 3000

    @Option(help: "Seconds the run may spend waiting, before a window, for other processes to use under 0.1 cores.")
    var patience: Double = 60

    func validate() throws {
        guard attackers >= 1, quietConnections >= 1, quietRate > 0, duration > 0, ramp > 0, after >= 0 else {
            throw ValidationError(
                "--attackers, --quiet-connections, --quiet-rate, --duration and --ramp must be positive")
        }
        guard messageBytes > holdBack, holdBack >= 1, trickleInterval > 0, trickleBytes >= 1, reopenDelay >= 0,
            sampleInterval > 0
        else {
            throw ValidationError(
                "--hold-back must be at least 1 and under --message-bytes; --trickle-interval and "
                    + "--sample-interval positive")
        }
        guard !shapes.isEmpty else { throw ValidationError("--shapes needs at least one shape") }
    }

    private var options: OverloadReport.Options {
        OverloadReport.Options(
            attackers: attackers, messageBytes: messageBytes, holdBack: holdBack,
            trickleIntervalSeconds: trickleInterval, trickleBytes: trickleBytes, reopenDelaySeconds: reopenDelay,
            quietRate: quietRate,
            quietConnections: quietConnections, store: store, quietSeconds: duration, rampSeconds: ramp,
            heldSeconds: duration, afterSeconds: after, warmupSeconds: warmup, maxBufferedBytes: maxBufferedBytes,
            memoryLimitMiB: memoryLimitMib, rssGrowthBudgetMB: rssGrowthBudget)
    }

    func run() async throws {
        var report = OverloadReport(
            date: ISO8601DateFormatter().string(from: Date()), command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(), options: options)
        // The quiet tenant's client has an event loop of its own, so the attackers' writes never delay its calls
        // on the client side.
        let quietGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let attackGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let budget = PatienceBudget(.milliseconds(Int64(patience * 1000)))
        do {
            for shape in shapes {
                let plan = shape.plan(
                    messageBytes: messageBytes, holdBack: holdBack, trickleInterval: trickleInterval,
                    trickleBytes: trickleBytes, reopenDelay: reopenDelay)
                var run = try await measure(
                    plan: plan, quietGroup: quietGroup, attackLoop: attackGroup.next(), budget: budget)
                run.evaluate(options: options)
                report.runs.append(run)
            }
        } catch {
            try? await quietGroup.shutdownGracefully()
            try? await attackGroup.shutdownGracefully()
            throw error
        }
        try await quietGroup.shutdownGracefully()
        try await attackGroup.shutdownGracefully()
        try common.publish(report.render(), report)
    }

    // MARK: One shape

    private func measure(
        plan: AttackPlan, quietGroup: any EventLoopGroup, attackLoop: any EventLoop, budget: PatienceBudget
    ) async throws -> OverloadReport.Run {
        let tenants =
            (0..<attackers).map {
                BenchTenant(namespace: Self.attackerNamespace($0), apps: [Self.attackerApp], quotas: [:])
            } + [BenchTenant(namespace: Self.quietNamespace, apps: [Self.quietApp], quotas: [:])]
        let fixture = try BenchFixture.create(tenants: tenants, resourcesSource: common.resources)
        let metricsPort = try MetricsScrape.freePort()
        var extraArguments: [String] = []
        if let maxBufferedBytes { extraArguments += ["--max-buffered-bytes", "\(maxBufferedBytes)"] }
        TextTable.progress("shape '\(plan.name)': starting hangard")
        let started = try await ManagedProcess.startHangard(
            executable: common.hangard, fixture: fixture, metricsListen: "127.0.0.1:\(metricsPort)",
            extraArguments: extraArguments)
        let process = started.process
        var quiet: [GRPCClientConnection] = []
        var attackersStarted: [OverloadAttacker] = []
        do {
            quiet = try await connectQuiet(fixture: fixture, group: quietGroup)
            let requests = try quietRequests()
            let timeline = OverloadTimeline(
                pid: process.pid, metricsPort: metricsPort, origin: NIODeadline.now().uptimeNanoseconds,
                interval: .milliseconds(Int64(sampleInterval * 1000)), rssCapMB: rssCap,
                namespaces: tenants.map(\.namespace))
            let attackers = try await makeAttackers(plan: plan, fixture: fixture, loop: attackLoop)
            let live = AttackersBox()
            async let sampling: Void = timeline.run { live.attackers }

            if !budget.isExhausted {
                let busy = try await budget.waitForQuiet(threshold: 0.1, limit: .seconds(20))
                if busy >= 0.1 {
                    TextTable.progress(
                        "other processes keep \(TextTable.format(busy, 2)) cores busy; measuring anyway")
                }
            }
            var windows: [OverloadReport.Window] = []
            windows.append(
                try await window("quiet", warmup: warmup, seconds: duration, quiet: quiet, requests: requests,
                    pid: process.pid, timeline: timeline))
            let baseline = ProcessSample.readProcFile("/proc/\(process.pid)/status")
                .flatMap { ProcessSample.statusValue($0, "VmRSS") }.map { Double($0) * 1024 / 1_000_000 } ?? 0

            timeline.enter("ramp")
            live.attackers = attackers
            for attacker in attackers { attacker.start() }
            attackersStarted = attackers
            windows.append(
                try await window("ramp", warmup: 0, seconds: ramp, quiet: quiet, requests: requests,
                    pid: process.pid, timeline: timeline))
            windows.append(
                try await window("held", warmup: 0, seconds: duration, quiet: quiet, requests: requests,
                    pid: process.pid, timeline: timeline))
            // An attacker the sampler stopped at the RSS cap reports what it had then.
            let probe = await probeNewConnection(fixture: fixture, group: quietGroup)
            TextTable.progress("a new connection of the quiet tenant during the attack: \(probe)")
            var tallies: [OverloadReport.Attacker] = []
            for attacker in attackers {
                tallies.append(.init(namespace: attacker.namespace, tally: try await attacker.stop()))
            }
            attackersStarted = []
            live.attackers = []
            if after > 0 {
                windows.append(
                    try await window("after", warmup: 0, seconds: after, quiet: quiet, requests: requests,
                        pid: process.pid, timeline: timeline))
            }
            timeline.stop()
            await sampling

            let samples = timeline.samples
            let attacked = samples.filter { $0.window != "quiet" && $0.window != "start" }
            let peak = (try? ProcessSample.read(pid: process.pid)).map { BenchServer.megabytes($0.peakRSSKiB) } ?? 0
            await GRPCClientConnection.close(quiet)
            let (status, seconds) = await process.terminate(timeout: .seconds(30))
            let exit =
                status.map { "exited with status \($0) \(TextTable.format(seconds, 1)) s after SIGTERM" }
                ?? "killed after \(TextTable.format(seconds, 1)) s"
            TextTable.progress("shape '\(plan.name)': hangard \(exit)")
            common.finish(fixture)
            for attacker in tallies {
                TextTable.progress(
                    "\(attacker.namespace): \(attacker.tally.streamsOpened) streams, "
                        + "\(TextTable.format(Double(attacker.tally.bytesAccepted) / 1_000_000, 1)) MB sent, "
                        + "\(TextTable.format(Double(attacker.tally.bytesHeld) / 1_000_000, 1)) MB held at the end, "
                        + "\(attacker.tally.refused) refused")
            }
            return OverloadReport.Run(
                plan: plan, hangardSecondsToReady: started.secondsToReady, baselineRSSMB: baseline,
                maxRSSMB: max(baseline, attacked.map(\.rssMB).max() ?? 0), endRSSMB: samples.last?.rssMB ?? 0,
                peakRSSMB: peak, windows: windows, attackers: tallies, samples: samples, hangardExit: exit,
                abortedAtRSSMB: timeline.abortedAtMB, newQuietConnection: probe)
        } catch {
            for attacker in attackersStarted { _ = try? await attacker.stop() }
            await GRPCClientConnection.close(quiet)
            _ = await process.terminate(timeout: .seconds(10))
            TextTable.progress("hangard's log ends with:\n\(process.logTail())")
            if !common.keep { fixture.remove() }
            throw error
        }
    }

    /// The attackers of the moment, for the sampler.
    private final class AttackersBox: Sendable {
        private let value = Mutex<[OverloadAttacker]>([])

        var attackers: [OverloadAttacker] {
            get { value.withLock { $0 } }
            set { value.withLock { $0 = newValue } }
        }
    }

    private func makeAttackers(
        plan: AttackPlan, fixture: BenchFixture, loop: any EventLoop
    ) async throws -> [OverloadAttacker] {
        var made: [OverloadAttacker] = []
        for index in 0..<attackers {
            let namespace = Self.attackerNamespace(index)
            made.append(
                try await OverloadAttacker.make(
                    namespace: namespace, socket: fixture.grpcSocket(namespace: namespace, app: Self.attackerApp),
                    plan: plan, eventLoop: loop))
        }
        return made
    }

    // MARK: The quiet tenant

    private static let keys = 64

    private func quietKeys(_ connection: Int) -> [String] {
        (0..<Self.keys).map { BenchRequests.key(caller: connection, index: $0) }
    }

    /// Opens the quiet tenant's connections and stores the keys it reads (read back once).
    private func connectQuiet(fixture: BenchFixture, group: any EventLoopGroup) async throws -> [GRPCClientConnection] {
        let socket = fixture.grpcSocket(namespace: Self.quietNamespace, app: Self.quietApp)
        var connections: [GRPCClientConnection] = []
        do {
            for _ in 0..<quietConnections {
                connections.append(try await GRPCClientConnection.connect(unixSocket: socket, group: group))
            }
            let value = BenchRequests.value(bytes: 100)
            for (index, connection) in connections.enumerated() {
                _ = try await connection.unary(
                    path: BenchRequests.saveStatePath,
                    message: try BenchRequests.saveState(store: store, keys: quietKeys(index), value: value)
                ).get()
            }
            let readBack = try await connections[0].unary(
                path: BenchRequests.getStatePath,
                message: try BenchRequests.getState(store: store, key: quietKeys(0)[0])
            ).get()
            guard try BenchRequests.decodeGetState(readBack) == value else {
                throw BenchError("GetState on \(store) did not return the value just saved")
            }
            return connections
        } catch {
            await GRPCClientConnection.close(connections)
            throw error
        }
    }

    /// Whether the quiet tenant can still open a connection and make a call while the attack holds (an app
    /// starting, or reconnecting): what happened, in words.
    private func probeNewConnection(fixture: BenchFixture, group: any EventLoopGroup) async -> String {
        let started = ContinuousClock.now
        let connection: GRPCClientConnection
        do {
            connection = try await GRPCClientConnection.connect(
                unixSocket: fixture.grpcSocket(namespace: Self.quietNamespace, app: Self.quietApp), group: group)
        } catch {
            return "connect failed: \(error)"
        }
        let outcome: String
        do {
            let message = try BenchRequests.getState(store: store, key: quietKeys(0)[0])
            let call = connection.unary(path: BenchRequests.getStatePath, message: message)
            let timeout = connection.eventLoop.scheduleTask(in: .seconds(5)) { connection.channel.close(promise: nil) }
            _ = try await call.get()
            timeout.cancel()
            let elapsed = (ContinuousClock.now - started).components
            let milliseconds = Double(elapsed.seconds) * 1000 + Double(elapsed.attoseconds) / 1e15
            outcome = "OK, connected and answered in \(TextTable.format(milliseconds, 1)) ms"
        } catch {
            outcome = "GetState failed: \(error)"
        }
        await connection.close()
        return outcome
    }

    private func quietRequests() throws -> [[GRPCClientRequest]] {
        try (0..<quietConnections).map { connection in
            GRPCClientRequest.batch(
                path: BenchRequests.getStatePath,
                try quietKeys(connection).map { try BenchRequests.getState(store: store, key: $0) })
        }
    }

    /// One window of the quiet tenant's paced load (after `warmup` unmeasured seconds), with hangard's CPU, the
    /// bench's and the machine's over it.
    private func window(
        _ name: String, warmup: Double, seconds: Double, quiet: [GRPCClientConnection],
        requests: [[GRPCClientRequest]], pid: pid_t, timeline: OverloadTimeline
    ) async throws -> OverloadReport.Window {
        timeline.enter(name)
        let nanosecondsPerSecond = 1_000_000_000.0
        let origin = NIODeadline.now().uptimeNanoseconds + 20_000_000
        let measureFrom = origin + UInt64(warmup * nanosecondsPerSecond)
        let end = measureFrom + UInt64(seconds * nanosecondsPerSecond)
        let futures = PacedCaller.start(
            on: quiet, requests: requests, rate: quietRate,
            schedule: PacedSchedule(start: origin, measureFrom: measureFrom, end: end))
        try await PacedSchedule.sleep(until: measureFrom)
        let systemBefore = SystemCPUSample.read()
        let before = try? ProcessSample.read(pid: pid)
        let benchBefore = ProcessSample.ownCPUMicros()
        let sampledFrom = NIODeadline.now().uptimeNanoseconds
        try await PacedSchedule.sleep(until: end)
        let sampledSeconds = Double(NIODeadline.now().uptimeNanoseconds - sampledFrom) / nanosecondsPerSecond
        let benchMicros = ProcessSample.ownCPUMicros() - benchBefore
        let after = try? ProcessSample.read(pid: pid)
        let systemAfter = SystemCPUSample.read()
        var outcomes: [PacedOutcome] = []
        for future in futures { outcomes.append(try await future.get()) }
        let traffic = PacedTraffic(PacedOutcome.merged(outcomes), seconds: seconds)
        let daemonMicros = before.flatMap { before in after.map { ProcessSample.cpuMicros(from: before, to: $0) } } ?? 0
        let (otherCores, stealPercent) = SystemCPUSample.otherLoad(
            from: systemBefore, to: systemAfter, knownMicros: daemonMicros + benchMicros, seconds: sampledSeconds)
        let window = OverloadReport.Window(
            name: name, seconds: seconds, quiet: traffic, daemonCores: daemonMicros / 1_000_000 / sampledSeconds,
            benchCores: benchMicros / 1_000_000 / sampledSeconds, otherCores: otherCores, stealPercent: stealPercent,
            rssMBAtEnd: after.map { BenchServer.megabytes($0.rssKiB) } ?? 0)
        TextTable.progress(
            "\(name): quiet \(TextTable.format(traffic.okPerSecond, 0)) calls/s, p50 "
                + "\(TextTable.format(traffic.latency.p50, 1)) µs, p99 "
                + "\(TextTable.format(traffic.latency.p99, 1)) µs, "
                + "\(traffic.errors) errors; hangard RSS \(TextTable.format(window.rssMBAtEnd, 1)) MB, "
                + "\(TextTable.format(window.daemonCores, 3)) cores")
        return window
    }
}
