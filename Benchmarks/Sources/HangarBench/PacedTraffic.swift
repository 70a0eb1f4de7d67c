/// Paced callers' calls in a measured window (by the instant each call was sent): what was issued and how it
/// ended, with the rates over the window.
struct PacedTraffic: Codable, Sendable {
    var issued: Int
    var ok: Int
    var refused: Int
    var failed: Int
    var unanswered: Int
    var offeredPerSecond: Double
    /// OK answers a second (for a tenant over its quota, the calls the quota let through).
    var okPerSecond: Double
    var refusedPerSecond: Double
    /// Client-observed latency of the OK calls, in microseconds.
    var latency: LatencySummary
    /// How late the calls left against their schedule (the bench client's own delay), in microseconds.
    var issueLag: LatencySummary
    var firstRefusal: String?
    var firstError: String?

    init(_ outcome: PacedOutcome, seconds: Double) {
        issued = outcome.issued
        ok = outcome.succeeded
        refused = outcome.refused
        failed = outcome.failed
        unanswered = outcome.unanswered
        offeredPerSecond = Double(outcome.issued) / seconds
        okPerSecond = Double(outcome.succeeded) / seconds
        refusedPerSecond = Double(outcome.refused) / seconds
        latency = LatencySummary(samples: outcome.latencies)
        issueLag = LatencySummary(samples: outcome.issueLags)
        firstRefusal = outcome.firstRefusal
        firstError = outcome.firstError
    }

    /// Calls that did not get an OK answer, refusals included.
    var errors: Int { refused + failed + unanswered }
}
