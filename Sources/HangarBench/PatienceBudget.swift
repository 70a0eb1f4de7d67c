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
}
