/// What one attacking tenant got from hangard, counted by its connections (all on one event loop, which owns the
/// tally). Bytes are the SaveState message's bytes (prefix included) whose DATA frame write completed: handed to
/// the kernel without a stream reset or a closed connection first.
struct AttackTally: Codable, Sendable {
    /// Connections attempted, connected, refused at connect, and closed by hangard (not by the attacker).
    var connectionsAttempted = 0
    var connectionsOpened = 0
    var connectFailures = 0
    var connectionsClosedByServer = 0
    /// GOAWAY frames received, by error code.
    var goAways: [String: Int] = [:]
    /// Streams whose HEADERS went out.
    var streamsOpened = 0
    var bytesAccepted = 0
    /// Bytes sent on the streams open right now (what the attacker holds pinned in hangard, as far as it knows).
    var bytesHeld = 0
    var streamsOpen = 0
    /// Streams ended by hangard with trailers `grpc-status: 8` (RESOURCE_EXHAUSTED), with another non-zero status
    /// (by code), by RST_STREAM without trailers (by error code), or lost with their connection.
    var refused = 0
    var otherStatuses: [String: Int] = [:]
    var resets: [String: Int] = [:]
    var lostWithConnection = 0
    /// Streams that completed with status 0 (a bug in the attacker: the message is never finished).
    var completed = 0
    /// One-byte DATA frames sent to keep a stream's request in progress, and their writes that completed.
    var trickles = 0
    var tricklesAccepted = 0
    var firstRefusal: String?
    var firstOtherEnd: String?

    /// Streams that hangard ended, however.
    var streamsEnded: Int {
        refused + otherStatuses.values.reduce(0, +) + resets.values.reduce(0, +) + lostWithConnection + completed
    }

    /// The tallies of several attackers as one.
    static func merged(_ tallies: [AttackTally]) -> AttackTally {
        var total = AttackTally()
        for tally in tallies {
            total.connectionsAttempted += tally.connectionsAttempted
            total.connectionsOpened += tally.connectionsOpened
            total.connectFailures += tally.connectFailures
            total.connectionsClosedByServer += tally.connectionsClosedByServer
            total.goAways.merge(tally.goAways, uniquingKeysWith: +)
            total.streamsOpened += tally.streamsOpened
            total.bytesAccepted += tally.bytesAccepted
            total.bytesHeld += tally.bytesHeld
            total.streamsOpen += tally.streamsOpen
            total.refused += tally.refused
            total.otherStatuses.merge(tally.otherStatuses, uniquingKeysWith: +)
            total.resets.merge(tally.resets, uniquingKeysWith: +)
            total.lostWithConnection += tally.lostWithConnection
            total.completed += tally.completed
            total.trickles += tally.trickles
            total.tricklesAccepted += tally.tricklesAccepted
            total.firstRefusal = total.firstRefusal ?? tally.firstRefusal
            total.firstOtherEnd = total.firstOtherEnd ?? tally.firstOtherEnd
        }
        return total
    }
}
