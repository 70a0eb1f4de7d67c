/// A component's health, as `/healthz/detail` and the metadata API report it. Ordered from best to worst, so the
/// worst of several is their `max()`.
package enum ComponentStatus: String, Sendable, Hashable, Comparable, CaseIterable {
    /// Serving.
    case up = "UP"
    /// Not initialised yet: its first attempt is running.
    case initialising = "INIT"
    /// Its initialisation failed; it is retried with backoff, and calls to it are refused meanwhile.
    case down = "DOWN"

    var rank: Int {
        switch self {
        case .up: 0
        case .initialising: 1
        case .down: 2
        }
    }

    package static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
}
