import Synchronization

/// How long the whole run may spend waiting for other processes to quiet down and re-running phases they
/// disturbed, so that a busy machine makes the bench slower only up to a bound.
final class PatienceBudget: Sendable {
    private let remaining: Mutex<Duration>

    init(_ total: Duration) {
        remaining = Mutex(total)
    }

    var isExhausted: Bool { remaining.withLock { $0 <= .zero } }

    /// Up to `wanted` of what is left.
    func allowance(_ wanted: Duration) -> Duration {
        remaining.withLock { min($0, wanted) }
    }

    func spend(_ spent: Duration) {
        remaining.withLock { $0 -= spent }
    }

    /// Waits, for at most `limit` of what is left, until other processes use less than `threshold` cores; returns
    /// their last busy level. The first half-second look is the normal cost of a phase; only waiting beyond it is
    /// charged.
    func waitForQuiet(threshold: Double, limit: Duration) async throws -> Double {
        let started = ContinuousClock.now
        let busy = try await SystemCPUSample.waitForQuiet(threshold: threshold, limit: allowance(limit))
        spend(ContinuousClock.now - started - .milliseconds(500))
        return busy
    }
}
