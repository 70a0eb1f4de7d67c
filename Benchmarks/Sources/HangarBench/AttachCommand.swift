import ArgumentParser
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// `hangar-bench attach`: how long a new app takes to be served once its Tenant file lands in `--tenancy`, and how
/// long its socket takes to go once the file is removed, on a hangard already serving `--apps` apps. Each sample
/// writes `attach-<i>.yaml` (one tenant, one app) next to the tenancy directory and renames it in (atomic, one
/// inotify event), then polls the new gRPC socket until a GetState on a fresh connection answers; closes that
/// connection, removes the file and polls until the socket file is gone.
struct AttachCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attach",
        abstract: "Measure the time from a new Tenant file to its app's socket answering, and back.")

    static let app = "app"

    @OptionGroup var common: HangardOptions

    @Option(help: "Apps declared (tenant 'bench') before the samples.")
    var apps = 100

    @Option(help: "New tenant files attached and removed, one after the other.")
    var samples = 20

    @Option(help: "Seconds between one attach and its removal, and between samples.")
    var pause: Double = 0.2

    @Option(help: "Seconds an attach or a detach may take before the run fails.")
    var timeout: Double = 10

    /// How often the socket is polled.
    static let poll: Duration = .milliseconds(1)

    func validate() throws {
        guard apps >= 1, samples >= 1 else { throw ValidationError("--apps and --samples must be positive") }
        guard pause >= 0, timeout > 0 else {
            throw ValidationError("--pause must not be negative and --timeout must be positive")
        }
    }

    func run() async throws {
        var report = AttachReport(
            date: ISO8601DateFormatter().string(from: Date()), command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(),
            options: AttachReport.Options(
                apps: apps, samples: samples, pauseSeconds: pause,
                pollMilliseconds: Double(Self.poll.components.attoseconds) / 1e15),
            hangardSecondsToReady: 0)
        let fixture = try BenchFixture.create(apps: apps, resourcesSource: common.resources)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var process: ManagedProcess?
        do {
            let started = try await ManagedProcess.startHangard(executable: common.hangard, fixture: fixture)
            process = started.process
            report.hangardSecondsToReady = started.secondsToReady
            TextTable.progress(
                "hangard ready in \(TextTable.format(started.secondsToReady, 2)) s with \(apps) apps "
                    + "(pid \(started.process.pid))")
            try await Task.sleep(for: .seconds(1))
            for index in 0..<samples {
                let sample = try await measure(index, fixture: fixture, group: group, hangard: started.process)
                TextTable.progress(
                    "attach-\(index): socket after \(TextTable.format(sample.socketAppearedMs, 1)) ms, answered after "
                        + "\(TextTable.format(sample.attachMs, 1)) ms; gone \(TextTable.format(sample.detachMs, 1)) ms "
                        + "after removal")
                report.samples.append(sample)
                try await Task.sleep(for: .seconds(pause))
            }
        } catch {
            if let process { _ = await process.terminate(timeout: .seconds(10)) }
            try? await group.shutdownGracefully()
            if !common.keep { fixture.remove() }
            throw error
        }
        if let process {
            let (status, seconds) = await process.terminate(timeout: .seconds(30))
            let exit = status.map(String.init) ?? "killed"
            TextTable.progress("hangard stopped in \(TextTable.format(seconds, 2)) s, exit status \(exit)")
            Self.addReloadTimes(&report.samples, log: ProcessSample.readProcFile(process.logPath) ?? "")
        }
        try await group.shutdownGracefully()
        report.summarise()
        try common.publish(report.render(), report)
        common.finish(fixture)
    }

    /// One attach and detach of tenant `attach-<index>`.
    private func measure(
        _ index: Int, fixture: BenchFixture, group: any EventLoopGroup, hangard: ManagedProcess
    ) async throws -> AttachReport.Sample {
        let namespace = "attach-\(index)"
        let tenant = BenchTenant(namespace: namespace, apps: [Self.app], quotas: [:])
        // Written outside the watched directory, so that the rename is the only event hangard sees.
        let temporary = fixture.root + "/.\(namespace).yaml.tmp"
        let file = fixture.tenancy + "/\(namespace).yaml"
        try tenant.yaml.write(toFile: temporary, atomically: false, encoding: .utf8)
        let socket = fixture.grpcSocket(namespace: namespace, app: Self.app)
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        let request = try BenchRequests.getState(store: "memstore", key: "absent")

        let renamed = NIODeadline.now().uptimeNanoseconds
        guard rename(temporary, file) == 0 else {
            throw BenchError("cannot rename \(temporary) to \(file): \(String(cString: strerror(errno)))")
        }
        var appeared: UInt64?
        var answered: UInt64?
        var lastError = "the socket file never appeared"
        while answered == nil {
            if appeared == nil, access(socket, F_OK) == 0 { appeared = NIODeadline.now().uptimeNanoseconds }
            if appeared != nil {
                var connection: GRPCClientConnection?
                do {
                    connection = try await GRPCClientConnection.connect(unixSocket: socket, group: group)
                    _ = try await connection!.unary(path: BenchRequests.getStatePath, message: request).get()
                    answered = NIODeadline.now().uptimeNanoseconds
                } catch {
                    lastError = "\(error)"
                }
                await connection?.close()
            }
            if answered == nil {
                guard ContinuousClock.now < deadline else {
                    throw BenchError(
                        "\(namespace)/\(Self.app) did not answer within \(timeout) s (\(lastError)); "
                            + "hangard's log ends with:\n\(hangard.logTail())")
                }
                try await Task.sleep(for: Self.poll)
            }
        }

        try await Task.sleep(for: .seconds(pause))
        let detachDeadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        let removed = NIODeadline.now().uptimeNanoseconds
        guard unlink(file) == 0 else { throw BenchError("cannot remove \(file): \(String(cString: strerror(errno)))") }
        while access(socket, F_OK) == 0 {
            guard ContinuousClock.now < detachDeadline else {
                throw BenchError(
                    "the socket of \(namespace)/\(Self.app) is still there \(timeout) s after its file was removed; "
                        + "hangard's log ends with:\n\(hangard.logTail())")
            }
            try await Task.sleep(for: Self.poll)
        }
        let gone = NIODeadline.now().uptimeNanoseconds

        func milliseconds(_ from: UInt64, _ to: UInt64) -> Double { Double(to - from) / 1_000_000 }
        return AttachReport.Sample(
            index: index, socketAppearedMs: milliseconds(renamed, appeared!),
            attachMs: milliseconds(renamed, answered!),
            detachMs: milliseconds(removed, gone))
    }

    /// Fills in the `reload.ms` hangard logged ("configuration reloaded", text format) for the reload that added
    /// each sample's app and the one that removed it.
    private static func addReloadTimes(_ samples: inout [AttachReport.Sample], log: String) {
        var added: [String: Double] = [:]
        var removed: [String: Double] = [:]
        for line in log.split(separator: "\n") where line.contains("configuration reloaded") {
            var fields: [Substring: Substring] = [:]
            for token in line.split(separator: " ") {
                guard let equals = token.firstIndex(of: "=") else { continue }
                fields[token[..<equals]] = token[token.index(after: equals)...]
            }
            guard let milliseconds = fields["reload.ms"].flatMap({ Double($0) }) else { continue }
            for app in fields["apps.added"]?.split(separator: ",") ?? [] { added[String(app)] = milliseconds }
            for app in fields["apps.removed"]?.split(separator: ",") ?? [] { removed[String(app)] = milliseconds }
        }
        for index in samples.indices {
            let app = "attach-\(samples[index].index)/\(Self.app)"
            samples[index].attachReloadMs = added[app]
            samples[index].detachReloadMs = removed[app]
        }
    }
}
