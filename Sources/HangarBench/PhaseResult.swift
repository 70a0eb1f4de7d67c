/// One measured phase: an operation against one server, by some callers over some connections.
struct PhaseResult: Codable, Sendable {
    /// `hangard` or `echo`.
    var server: String
    /// `GetState`, `SaveState` or `Echo`.
    var operation: String
    /// The state store (`memstore`, `sqlstore`), or nil for echo.
    var store: String?
    /// `sequential` (one caller) or `concurrent`.
    var mode: String
    var callers: Int
    var connections: Int
    /// Successful calls measured (warm-up excluded).
    var calls: Int
    var errors: Int
    var firstError: String?
    var seconds: Double
    var callsPerSecond: Double
    /// Client-observed latency of the successful calls, in microseconds.
    var latency: LatencySummary
    /// Server CPU time (user + system, from `/proc/<pid>/stat`) over the phase, divided by the calls.
    var serverCPUMicrosPerCall: Double
    /// Server context switches (all threads) over the phase, divided by the calls.
    var serverContextSwitchesPerCall: Double
    /// The bench's own CPU time over the phase, divided by the calls.
    var clientCPUMicrosPerCall: Double
    /// Server RSS at the end of the phase, in MB (10^6 bytes).
    var serverRSSMB: Double

    /// A short label for tables: `GetState memstore sequential`.
    var label: String {
        [operation, store, mode].compactMap { $0 }.joined(separator: " ")
    }
}
