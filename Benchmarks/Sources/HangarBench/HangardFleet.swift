import Glibc

/// The hangard processes serving one model of `hangar-bench sidecar`: one hangard per fixture, each fixture with
/// its own tenancy, resources, socket root and data directory. The node model is one fixture declaring every app;
/// the sidecar model one fixture per app.
struct HangardFleet: Sendable {
    let processes: [ManagedProcess]
    let fixtures: [BenchFixture]
    /// Seconds from the first spawn to the last "hangard ready".
    let secondsToStart: Double

    var pids: [pid_t] { processes.map(\.pid) }

    /// Spawns every hangard, then waits until each is ready. On failure, stops those already spawned.
    static func start(executable: String, fixtures: [BenchFixture]) async throws -> HangardFleet {
        let started = ContinuousClock.now
        var processes: [ManagedProcess] = []
        do {
            for fixture in fixtures {
                processes.append(try ManagedProcess.spawnHangard(executable: executable, fixture: fixture))
            }
            for process in processes { _ = try await process.waitForHangard() }
        } catch {
            await stop(processes)
            throw error
        }
        let elapsed = (ContinuousClock.now - started).components
        return HangardFleet(
            processes: processes, fixtures: fixtures,
            secondsToStart: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }

    /// Stops every process: SIGTERM to all at once, then each is waited for and killed (SIGKILL) if it has not
    /// exited within 10 s. Returns how many had to be killed.
    @discardableResult
    func stop() async -> Int {
        await Self.stop(processes)
    }

    @discardableResult
    private static func stop(_ processes: [ManagedProcess]) async -> Int {
        for process in processes { kill(process.pid, SIGTERM) }
        var killed = 0
        for process in processes where await process.terminate(timeout: .seconds(10)).status == nil {
            killed += 1
        }
        return killed
    }

    func removeFixtures() {
        for fixture in fixtures { fixture.remove() }
    }
}
