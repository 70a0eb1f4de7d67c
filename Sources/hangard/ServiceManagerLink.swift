#if canImport(Glibc)
import Glibc
#endif
import HangarRuntime
import HangarSystemd
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import HangarSync

/// What hangard tells systemd, when systemd started it (`NOTIFY_SOCKET` set; otherwise nothing is sent):
/// `READY=1` once every listener is up and every component has made its first initialisation attempt, `STATUS=`
/// with the tenant, app and component counts (updated as they change), `WATCHDOG=1` every half `WatchdogSec=`
/// after checking that every event loop runs a task, and `STOPPING=1` when shutdown begins.
///
/// A `Service` of the daemon's group: its watchdog and status loop runs from start until the group's graceful
/// shutdown reaches it, which is after the node (later in the group) has drained every call, so systemd's watchdog
/// is fed while calls drain. The node sends `READY=1` and `STOPPING=1` through it.
final class ServiceManagerLink: Service, Sendable {
    private let runtime: Runtime
    private let group: any EventLoopGroup
    private let logger: Logger
    private let supervised = Systemd.isSupervised
    private let lastStatus = Locked<String>("")
    /// Set by `ready()`: systemd's watchdog runs from then on, and the first `STATUS=` goes with `READY=1`.
    private let isReady = Atomic<Bool>(false)

    init(runtime: Runtime, group: any EventLoopGroup, logger: Logger) {
        self.runtime = runtime
        self.group = group
        self.logger = logger
    }

    /// `READY=1` with the first `STATUS=`. A process that took over from a running hangard (an upgrade started by
    /// `ExecReload=`, so not the unit's main process) also sends `MAINPID=` with its own pid: systemd then follows
    /// it, and the predecessor's exit does not end the unit (the unit needs `NotifyAccess=all` for this).
    func ready(tookOver: Bool = false) {
        guard supervised else { return }
        let status = currentStatus()
        lastStatus.withLock { $0 = status }
        Systemd.notify((tookOver ? "MAINPID=\(getpid())\n" : "") + "READY=1\nSTATUS=\(status)")
        isReady.store(true, ordering: .releasing)
        if let watchdog = Systemd.watchdogTimeout {
            logger.info("systemd watchdog enabled", metadata: ["watchdog.timeout": "\(watchdog)"])
        }
    }

    func run() async {
        guard supervised else {
            // Nothing to send, but a service that returns early would end the group.
            try? await gracefulShutdown()
            return
        }
        await cancelWhenGracefulShutdown { await self.watch() }
    }

    /// The watchdog and status loop, from `ready()` until the task running it is cancelled: `WATCHDOG=1` every half
    /// `WatchdogSec=`, as sd_watchdog_enabled(3) advises, and `STATUS=` when it changed; without a watchdog,
    /// `STATUS=` only, every 2 s.
    func watch() async {
        guard supervised else { return }
        let watchdog = Systemd.watchdogTimeout
        let tick = watchdog.map { $0 / 2 } ?? .seconds(2)
        while !Task.isCancelled {
            // Each round takes at most one tick: the event loops get half of it to answer, so two pings are never
            // more than about half WatchdogSec apart.
            let round = ContinuousClock.now
            guard isReady.load(ordering: .acquiring) else {
                try? await Task.sleep(for: .milliseconds(20))
                continue
            }
            if watchdog != nil { await pingWatchdog(within: tick / 2) }
            updateStatus()
            try? await Task.sleep(until: round + tick)
        }
    }

    /// `STOPPING=1`; the watchdog keeps being fed while calls drain, until `watch()` is cancelled.
    func stopping() {
        guard supervised else { return }
        Systemd.notify("STOPPING=1\nSTATUS=stopping: draining calls in flight")
    }

    /// Sends `STATUS=` when it changed.
    func updateStatus() {
        guard supervised else { return }
        let status = currentStatus()
        let changed = lastStatus.withLock { last -> Bool in
            defer { last = status }
            return last != status
        }
        if changed { Systemd.notify("STATUS=\(status)") }
    }

    func currentStatus() -> String {
        let configuration = runtime.configuration
        let counts = runtime.health.counts
        return "serving \(configuration.tenants.count) tenants, \(configuration.apps.count) apps; components: "
            + "\(counts[.up, default: 0]) up, \(counts[.initialising, default: 0]) initialising, "
            + "\(counts[.down, default: 0]) down"
    }

    /// `WATCHDOG=1` only when every event loop ran a task within `timeout`: a stuck loop stops the pings, and
    /// systemd restarts the service after `WatchdogSec=`.
    private func pingWatchdog(within timeout: Duration) async {
        let loops = Array(group.makeIterator())
        let answered = Atomic<Int>(0)
        for loop in loops { loop.execute { answered.add(1, ordering: .relaxed) } }
        let deadline = ContinuousClock.now + timeout
        while answered.load(ordering: .relaxed) < loops.count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let count = answered.load(ordering: .relaxed)
        if count == loops.count {
            Systemd.notify("WATCHDOG=1")
        } else {
            logger.error(
                "an event loop did not run a task in time; the systemd watchdog is not fed",
                metadata: ["loops": "\(loops.count)", "answered": "\(count)", "within": "\(timeout)"])
        }
    }
}
