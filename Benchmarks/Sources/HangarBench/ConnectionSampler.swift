import Foundation
import Glibc
import NIOCore
import Synchronization

/// Counts a backend server's connections while a model of `hangar-bench sidecar` runs: a shell command that prints
/// one integer (e.g. `redis-cli -p 6379 client list | grep -c name=hangard:state:redisstore`, or `psql … -Atc
/// "select count(*) from pg_stat_activity where …"`) run every `interval` on a thread of its own, each count kept
/// with the instant it was read. The command's processes are not the bench's: their CPU shows as other load.
final class ConnectionSampler: Sendable {
    struct Sample: Sendable {
        /// Monotonic nanoseconds when the command finished.
        var at: UInt64
        var count: Int
    }

    private let command: String
    private let interval: Duration
    private let samples = Mutex<[Sample]>([])
    private let failure = Mutex<String?>(nil)
    private let stopped = Atomic<Bool>(false)
    private let finished = Mutex<Bool>(false)
    /// Where the command's output goes (removed when sampling stops).
    private let outputPath = NSTemporaryDirectory() + "/hb-connections-\(UUID().uuidString).out"

    /// Starts sampling at once.
    init(command: String, interval: Duration) {
        self.command = command
        self.interval = interval
        Thread.detachNewThread { [self] in run() }
    }

    /// Counts read so far, and the first error (a command that failed or printed no integer), if any.
    var current: (samples: [Sample], error: String?) { (samples.withLock { $0 }, failure.withLock { $0 }) }

    /// Takes one more sample now, then stops the thread; returns every sample.
    func stop() async -> (samples: [Sample], error: String?) {
        stopped.store(true, ordering: .releasing)
        while !finished.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(10)) }
        return current
    }

    private func run() {
        let clock = ContinuousClock()
        while true {
            let started = clock.now
            let last = stopped.load(ordering: .acquiring)
            do {
                let count = try count(command)
                let at = NIODeadline.now().uptimeNanoseconds
                samples.withLock { $0.append(Sample(at: at, count: count)) }
            } catch {
                failure.withLock { if $0 == nil { $0 = "\(error)" } }
            }
            if last { break }
            // Sleep in small steps so that stop() does not wait a whole interval.
            while clock.now - started < interval, !stopped.load(ordering: .acquiring) { usleep(10_000) }
        }
        unlink(outputPath)
        finished.withLock { $0 = true }
    }

    /// Runs `/bin/sh -c command` and reads the integer it prints. Its output goes to a file the child opens, not to
    /// a pipe: the bench holds no descriptor that the hangards it spawns meanwhile could inherit.
    private func count(_ command: String) throws -> Int {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let arguments: [String] = ["/bin/sh", "-c", command]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ)
        guard spawned == 0 else { throw BenchError("connections command: cannot start /bin/sh (\(spawned))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        let text = (ProcessSample.readProcFile(outputPath) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        guard let count = Int(text) else {
            throw BenchError(
                "connections command printed '\(text.prefix(200))' rather than a number (status \(status))")
        }
        return count
    }
}

/// A model's backend connections from `ConnectionSampler`'s counts.
struct ConnectionCounts: Codable, Sendable {
    /// The last count before the bench connected (every hangard ready, no call made yet).
    var beforeLoad: Int?
    /// The most seen at any sample, from the hangards' start to the end of the measured window.
    var peak: Int
    /// The median and the last of the counts read within the measured window.
    var steadyMedian: Int?
    var last: Int
    var samples: Int
    var firstError: String?

    /// nil when no count was read.
    init?(_ samples: [ConnectionSampler.Sample], loadFrom: UInt64, measureFrom: UInt64, error: String?) {
        guard let lastSample = samples.last else { return nil }
        beforeLoad = samples.last { $0.at < loadFrom }?.count
        peak = samples.map(\.count).max()!
        let window = samples.filter { $0.at >= measureFrom }.map(\.count).sorted()
        steadyMedian = window.isEmpty ? nil : window[window.count / 2]
        last = lastSample.count
        self.samples = samples.count
        firstError = error
    }
}
