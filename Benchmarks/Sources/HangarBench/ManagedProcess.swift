import Glibc
import NIOCore

/// A child process the bench starts and stops (hangard, or its own echo server). Standard output and error go to
/// a log file, which is also where readiness is read from, so that a chatty child can never block on a full pipe.
struct ManagedProcess: Sendable {
    let name: String
    let pid: pid_t
    let logPath: String
    /// Monotonic nanoseconds at spawn.
    let spawnedAt: UInt64

    /// Spawns `executable` with `arguments`; stdin is /dev/null.
    static func spawn(
        name: String, executable: String, arguments: [String], logPath: String
    ) throws(ManagedProcessError) -> ManagedProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawnedAt = NIODeadline.now().uptimeNanoseconds
        let result = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        guard result == 0 else { throw .spawn(executable, result) }
        return ManagedProcess(name: name, pid: pid, logPath: logPath, spawnedAt: spawnedAt)
    }

    /// Waits until the log contains `marker`; returns the seconds from spawn. Fails if the process exits first.
    func waitForLog(_ marker: String, timeout: Duration) async throws -> Double {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let log = ProcessSample.readProcFile(logPath), log.contains(marker) {
                return Double(NIODeadline.now().uptimeNanoseconds - spawnedAt) / 1_000_000_000
            }
            if let status = reap() { throw ManagedProcessError.exited(name, status, logTail()) }
            try await Task.sleep(for: .milliseconds(10))
        }
        throw ManagedProcessError.notReady(name, marker, logTail())
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after `timeout`); returns the exit status (nil when it had to
    /// be killed) and the seconds it took.
    func terminate(timeout: Duration) async -> (status: Int32?, seconds: Double) {
        let start = ContinuousClock.now
        kill(pid, SIGTERM)
        while ContinuousClock.now - start < timeout {
            if let status = reap() { return (status, Self.seconds(ContinuousClock.now - start)) }
            try? await Task.sleep(for: .milliseconds(5))
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        return (nil, Self.seconds(ContinuousClock.now - start))
    }

    /// The exit status (or 128 + signal) if the process has ended.
    private func reap() -> Int32? {
        var status: Int32 = 0
        guard waitpid(pid, &status, WNOHANG) == pid else { return nil }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// The last lines of the log, for error messages.
    func logTail(lines: Int = 20) -> String {
        let log = ProcessSample.readProcFile(logPath) ?? ""
        return log.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
