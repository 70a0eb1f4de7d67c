/// One measured phase: an operation against one server, by some callers over some connections.
struct PhaseResult: Codable, Sendable {
    /// `hangard` or `echo`.
    var server: String
    /// `GetState`, `SaveState`, `Echo`, `InvokeService` (through hangard) or `OnInvoke` (the echo server, direct).
    var operation: String
    /// The state store (`memstore`, `sqlstore`), or nil for echo.
    var store: String?
    /// gRPC or Dapr's HTTP API; nil in results written before the HTTP scenarios existed (they were gRPC).
    var transport: BenchTransport?
    /// `sequential` (one caller) or `concurrent`.
    var mode: String
    var callers: Int
    /// The distinct apps (sockets) the callers were spread over; nil in older results.
    var apps: Int?
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
    /// The CPU time of the process the server passed the calls on to (the invoked echo server, when hangard
    /// invokes it), divided by the calls; nil when there is none.
    var calleeCPUMicrosPerCall: Double?
    /// Cores busy with anything other than the server and the bench during the phase (from `/proc/stat`); more
    /// than a few hundredths means the numbers were disturbed.
    var otherBusyCores: Double?
    /// Share of the machine's CPU time the hypervisor reported as stolen during the phase, in percent.
    var stealPercent: Double?
    /// Which run of the phase this is: above 1 when earlier runs were disturbed by other processes.
    var attempt = 1
    /// The round (pass over every phase) this result comes from.
    var round = 1
    /// With several rounds: the spread of the server's CPU per call, calls/s and p50 over the rounds, as
    /// [min, max]. This result is the round with the median server CPU per call.
    var rounds: Int?
    var serverCPUMicrosPerCallRange: [Double]?
    var callsPerSecondRange: [Double]?
    var p50Range: [Double]?
    /// Server RSS at the end of the phase, in MB (10^6 bytes).
    var serverRSSMB: Double

    /// The transport, gRPC when the result predates the field.
    var api: BenchTransport { transport ?? .grpc }

    /// A short label for tables: `GetState memstore sequential`, `GetState memstore HTTP concurrent`.
    var label: String {
        [operation, store, api == .http ? "HTTP" : nil, mode].compactMap { $0 }.joined(separator: " ")
    }

    /// What identifies a phase across rounds.
    var key: String { "\(server) \(label)" }
}
