/// When a component refusing a publish for lack of room (`PubSubError.full`, `.partitionFull`) may first run `trim`
/// to make some. Trimming walks every topic and consumer, so running it for every refused publish would make a
/// full component slowest exactly when it is under pressure (each publisher retrying pays a full scan).
///
/// A trim can only free room when something changed since the last one: a consumer acknowledged messages or went
/// away (`settled()`), or time passed for TTLs and the retention period to remove more (`interval`). The gate
/// lets a trim through on the first refusal after either, and never twice in one batch of operations (`begin()`):
/// refusals in between are answered at once. Not thread-safe: components keep it under the lock (or in the writer)
/// that serialises their operations, which also means at most one trim runs at a time.
package struct PubSubTrimGate: Sendable {
    /// How long after a trim that freed nothing new can be expected only from TTLs and age (milliseconds).
    package let interval: Int64
    private var lastTrim: Int64?
    private var settledSinceTrim = false
    private var trimmedThisBatch = false
    /// How many trims for room the gate let through (for tests and logs).
    package private(set) var trimsForRoom = 0

    package init(interval: Duration) {
        let (seconds, attoseconds) = interval.components
        self.interval = max(0, seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    /// A new batch of operations starts (each publish is its own batch on a component without batches).
    package mutating func begin() { trimmedThisBatch = false }

    /// A consumer acknowledged messages or was removed: the next refusal may trim.
    package mutating func settled() { settledSinceTrim = true }

    /// Whether a refused publish at `now` (milliseconds) should trim first; when true, the caller trims (and the
    /// trim calls `trimmed(now:)`).
    package mutating func shouldTrim(now: Int64) -> Bool {
        guard !trimmedThisBatch else { return false }
        let due = lastTrim.map { settledSinceTrim || now - $0 >= interval } ?? true
        if due { trimsForRoom += 1 }
        return due
    }

    /// A trim ran at `now`, for room or not (a periodic one too): what it could free is gone.
    package mutating func trimmed(now: Int64) {
        lastTrim = now
        settledSinceTrim = false
        trimmedThisBatch = true
    }
}
