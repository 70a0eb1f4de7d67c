/// What service invocation through hangard adds to a call, for one caller count: app → hangard → echo server
/// (`InvokeService`) against app → echo server (`OnInvoke`), same client, same kind of socket, and set beside a
/// GetState (in-memory, gRPC) of the same round, which is what the goals are ratios to. Each figure is
/// paired within a round (the phases ran seconds apart), then the median over the rounds is taken, figure by
/// figure, with the spread of the ratios.
struct InvocationOverhead: Codable, Sendable {
    /// A median over the rounds and, with several rounds, [min, max].
    struct Figure: Codable, Sendable {
        var median: Double
        var range: [Double]?

        init(_ values: [Double]) {
            let sorted = values.sorted()
            median = sorted[(sorted.count - 1) / 2]
            range = sorted.count > 1 ? [sorted[0], sorted[sorted.count - 1]] : nil
        }
    }

    /// `sequential` (one caller) or `concurrent`.
    var mode: String
    var callers: Int
    /// Rounds that had all three phases.
    var rounds: Int
    /// Client-observed latency, µs.
    var directP50: Figure
    var directP99: Figure
    var throughP50: Figure
    var throughP99: Figure
    /// Through hangard minus direct, µs.
    var addedP50: Figure
    var addedP99: Figure
    var getStateP50: Figure
    var getStateP99: Figure
    /// Added latency ÷ GetState's latency.
    var addedP50Ratio: Figure
    var addedP99Ratio: Figure
    /// hangard's CPU per invocation and per GetState, µs, and their ratio.
    var hangardCPUPerInvocation: Figure
    var hangardCPUPerGetState: Figure
    var cpuRatio: Figure
    /// The echo server's CPU per call answered directly and per call hangard passed on, µs.
    var echoCPUDirect: Figure
    var echoCPUThrough: Figure?

    /// Goals of the issue: added p50 ≤ 1.2× GetState's p50, added p99 ≤ 3× GetState's p99, hangard CPU per
    /// invocation ≤ 2× per GetState.
    static let p50Goal = 1.2
    static let p99Goal = 3.0
    static let cpuGoal = 2.0

    /// One per mode that has, in at least one round, GetState on `memstore` over gRPC, `InvokeService` on hangard
    /// and `OnInvoke` on the echo server.
    static func measure(_ phases: [PhaseResult]) -> [InvocationOverhead] {
        ["sequential", "concurrent"].compactMap { mode -> InvocationOverhead? in
            var triples: [(get: PhaseResult, through: PhaseResult, direct: PhaseResult)] = []
            for round in Set(phases.map(\.round)).sorted() {
                func find(_ server: String, _ operation: String, _ store: String?) -> PhaseResult? {
                    phases.first {
                        $0.round == round && $0.server == server && $0.operation == operation && $0.store == store
                            && $0.mode == mode && $0.api == .grpc
                    }
                }
                guard let get = find("hangard", "GetState", "memstore"),
                    let through = find("hangard", "InvokeService", nil), let direct = find("echo", "OnInvoke", nil),
                    get.latency.p50 > 0, get.latency.p99 > 0, get.serverCPUMicrosPerCall > 0
                else { continue }
                triples.append((get, through, direct))
            }
            guard let first = triples.first else { return nil }
            func figure(_ value: (PhaseResult, PhaseResult, PhaseResult) -> Double) -> Figure {
                Figure(triples.map { value($0.get, $0.through, $0.direct) })
            }
            let echoThrough = triples.compactMap { $0.through.calleeCPUMicrosPerCall }
            return InvocationOverhead(
                mode: mode, callers: first.through.callers, rounds: triples.count,
                directP50: figure { _, _, direct in direct.latency.p50 },
                directP99: figure { _, _, direct in direct.latency.p99 },
                throughP50: figure { _, through, _ in through.latency.p50 },
                throughP99: figure { _, through, _ in through.latency.p99 },
                addedP50: figure { _, through, direct in through.latency.p50 - direct.latency.p50 },
                addedP99: figure { _, through, direct in through.latency.p99 - direct.latency.p99 },
                getStateP50: figure { get, _, _ in get.latency.p50 },
                getStateP99: figure { get, _, _ in get.latency.p99 },
                addedP50Ratio: figure { get, through, direct in
                    (through.latency.p50 - direct.latency.p50) / get.latency.p50
                },
                addedP99Ratio: figure { get, through, direct in
                    (through.latency.p99 - direct.latency.p99) / get.latency.p99
                },
                hangardCPUPerInvocation: figure { _, through, _ in through.serverCPUMicrosPerCall },
                hangardCPUPerGetState: figure { get, _, _ in get.serverCPUMicrosPerCall },
                cpuRatio: figure { get, through, _ in through.serverCPUMicrosPerCall / get.serverCPUMicrosPerCall },
                echoCPUDirect: figure { _, _, direct in direct.serverCPUMicrosPerCall },
                echoCPUThrough: echoThrough.isEmpty ? nil : Figure(echoThrough))
        }
    }

    /// `1 caller`, `32 callers`.
    var callersLabel: String { callers == 1 ? "1 caller" : "\(callers) callers" }

    /// The three goals for this caller count.
    var targets: [BenchReport.TargetCheck] {
        [
            BenchReport.TargetCheck(
                name: "invocation added p50 / GetState p50 (\(callersLabel), same round)", target: "<= \(Self.p50Goal)",
                measured: addedP50Ratio.median, unit: "×", met: addedP50Ratio.median <= Self.p50Goal,
                range: addedP50Ratio.range),
            BenchReport.TargetCheck(
                name: "invocation added p99 / GetState p99 (\(callersLabel), same round)", target: "<= \(Self.p99Goal)",
                measured: addedP99Ratio.median, unit: "×", met: addedP99Ratio.median <= Self.p99Goal,
                range: addedP99Ratio.range),
            BenchReport.TargetCheck(
                name: "hangard CPU per invocation / per GetState (\(callersLabel), same round)",
                target: "<= \(Self.cpuGoal)", measured: cpuRatio.median, unit: "×",
                met: cpuRatio.median <= Self.cpuGoal,
                range: cpuRatio.range),
        ]
    }
}
