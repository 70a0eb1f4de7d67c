/// One measured phase of the `stream` scenario: what the streams and the unary calls on the one connection did,
/// and what the server process (and the app hangard relayed from) spent meanwhile.
struct StreamPhaseResult: Codable, Sendable {
    /// What ran during the phase.
    enum Kind: String, Codable, Sendable, CaseIterable {
        /// The reference: a fast consumer reading the echo server's stream directly (no hangard).
        case direct
        /// The closed loop of Echo alone on the connection to the echo server.
        case directUnaryAlone = "direct-unary-alone"
        /// The fast consumer and the closed loop of Echo on the one connection to the echo server: how much a
        /// stream slows unary calls on its connection with no relay at all (Hangar's HTTP/2 server and the bench's
        /// client alone).
        case directWithUnary = "direct+unary"
        /// The closed loop of GetState alone on the connection to hangard.
        case unaryAlone = "unary-alone"
        /// A fast and a slow consumer of the stream through hangard, on one connection, nothing else.
        case streams
        /// The same two streams and the closed loop of GetState, all on the one connection.
        case streamsWithUnary = "streams+unary"
        /// The control: the same two streams, and the closed loop of GetState on another connection to the same
        /// app socket. What slows GetState here is the machine (the same client thread, hangard's cores), not the
        /// streams sharing its connection.
        case streamsWithUnaryElsewhere = "streams+unary-other-conn"

        var hasFast: Bool { self != .unaryAlone && self != .directUnaryAlone }
        var hasSlow: Bool { throughHangard && self != .unaryAlone }
        var hasUnary: Bool { self != .direct && self != .streams }
        /// Whether the phase's calls go to hangard (else to the echo server directly).
        var throughHangard: Bool { self != .direct && self != .directUnaryAlone && self != .directWithUnary }
    }

    var kind: Kind
    /// The process measured: `hangard`, or `echo` for the direct phases.
    var server: String
    var round = 1
    /// Which run of the phase this is: above 1 when earlier runs were disturbed by other processes.
    var attempt = 1
    var seconds: Double
    /// Messages the fast consumer received (and consumed) during the phase, and per second.
    var fastMessages: Int?
    var fastMessagesPerSecond: Double?
    /// The slow consumer's credit rate (`--stream-slow-rate`), the messages it consumed (returned to its window)
    /// and those it received, and both per second.
    var slowCreditRate: Double?
    var slowMessages: Int?
    var slowMessagesPerSecond: Double?
    var slowReceived: Int?
    var slowReceivedPerSecond: Double?
    /// Messages the slow consumer had received and not consumed at the end: about a window's worth when hangard
    /// keeps it supplied (it is then the consumer's pace that limits), near 0 when it waited for messages.
    var slowBacklog: Int?
    /// The unary calls (GetState, in-memory, through hangard; Echo in the direct phases).
    var unaryCalls: Int?
    var unaryCallsPerSecond: Double?
    var unaryLatency: LatencySummary?
    /// The server's CPU over the phase (user + system from `/proc`), µs; per streamed message (both consumers'
    /// messages) when there are streams, per unary call in `unary-alone`.
    var serverCPUMicros: Double
    var serverCPUMicrosPerMessage: Double?
    var serverCPUMicrosPerUnaryCall: Double?
    var serverContextSwitches: Int
    /// The echo server's CPU per message it sent through hangard (the app hangard relays from), µs.
    var calleeCPUMicrosPerMessage: Double?
    /// The bench's own CPU over the phase, µs.
    var clientCPUMicros: Double
    /// The server's RSS at the start of the measured phase, its highest sample (every 100 ms) and at the end, MB.
    var serverRSSMBStart: Double
    var serverRSSMBPeak: Double
    var serverRSSMBEnd: Double
    /// Cores busy with anything other than the servers and the bench (from `/proc/stat`), and steal.
    var otherBusyCores: Double?
    var stealPercent: Double?

    /// Streamed messages of both consumers.
    var messages: Int { (fastMessages ?? 0) + (slowReceived ?? 0) }
}
