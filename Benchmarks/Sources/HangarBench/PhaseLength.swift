/// How long a phase runs: a number of calls shared by its callers, or a wall-clock duration.
enum PhaseLength: Sendable {
    case calls(Int)
    case seconds(Double)

    /// What each of `callers` callers does, for a phase starting at `start` (monotonic nanoseconds).
    func stop(callers: Int, start: UInt64) -> CallerStop {
        switch self {
        case .calls(let total): .calls(max(1, total / callers))
        case .seconds(let seconds): .deadline(start + UInt64(seconds * 1_000_000_000))
        }
    }
}
