/// What the pub/sub scenarios measured, over their rounds, beside GetState (in-memory, gRPC) of the same rounds:
/// each figure is taken per round (the phases of a round ran a minute apart at most, so ratios are paired within
/// it), then the median over the rounds, with their range. Holds the two goals: pubsub.sqlite sustains at
/// least half of GetState's calls/s with the same concurrent callers, and at half that rate its p99 publish →
/// delivery stays within 5 ms (on a machine where GetState's p99 is under 1 ms: both are reported).
struct PubSubSummary: Codable, Sendable {
    typealias Figure = InvocationOverhead.Figure

    /// Closed-loop PublishEvent on one component with one or many callers, and GetState with as many.
    struct Throughput: Codable, Sendable {
        var component: String
        var callers: Int
        var rounds: Int
        var publishPerSecond: Figure
        var publishP50: Figure
        var publishP99: Figure
        /// hangard's CPU per publish, µs.
        var hangardCPUPerMessage: Figure
        var getStatePerSecond: Figure?
        var getStateP50: Figure?
        var getStateP99: Figure?
        var hangardCPUPerGetState: Figure?
        /// PublishEvent calls/s ÷ GetState calls/s, paired per round.
        var ratioToGetState: Figure?
    }

    /// Publish → delivery in one kind of `pubsub` phase on one component.
    struct Delivery: Codable, Sendable {
        var component: String
        var kind: PubSubPhaseResult.Kind
        var delivery: PubSubDelivery
        var rounds: Int
        var offeredPerSecond: Figure
        var deliveredPerSecond: Figure
        var undelivered: Int
        var publishP50: Figure
        var publishP99: Figure
        var deliverP50: Figure
        var deliverP99: Figure
        var hangardCPUPerMessage: Figure
        /// The flooded phase only: its p50 and p99 ÷ those of the low-rate phase of the same round ("B alone"), and
        /// the flood's accepted events/s.
        var p50RatioToAlone: Figure?
        var p99RatioToAlone: Figure?
        var floodPerSecond: Figure?
    }

    var throughput: [Throughput]
    var delivery: [Delivery]
    var targets: [BenchReport.TargetCheck]

    /// The goals.
    static let ratioGoal = 0.5
    static let p99GoalMicros = 5_000.0
    static let getStateP99ConditionMicros = 1_000.0

    /// Nil when no pub/sub phase ran.
    static func measure(phases: [PhaseResult], delivery: [PubSubPhaseResult]) -> PubSubSummary? {
        let publishes = phases.filter { $0.operation == "PublishEvent" }
        guard !publishes.isEmpty || !delivery.isEmpty else { return nil }
        func getState(round: Int, callers: Int) -> PhaseResult? {
            phases.first {
                $0.round == round && $0.server == "hangard" && $0.operation == "GetState" && $0.store == "memstore"
                    && $0.api == .grpc && $0.callers == callers
            }
        }
        var throughput: [Throughput] = []
        for component in [PubSubScenario.memoryComponent, PubSubScenario.sqliteComponent] {
            for callers in Set(publishes.map(\.callers)).sorted() {
                let rounds = publishes.filter { $0.store == component && $0.callers == callers }
                guard !rounds.isEmpty else { continue }
                let gets = rounds.compactMap { getState(round: $0.round, callers: callers) }
                let paired = rounds.compactMap { publish -> Double? in
                    guard let get = getState(round: publish.round, callers: callers), get.callsPerSecond > 0 else {
                        return nil
                    }
                    return publish.callsPerSecond / get.callsPerSecond
                }
                throughput.append(
                    Throughput(
                        component: component, callers: callers, rounds: rounds.count,
                        publishPerSecond: Figure(rounds.map(\.callsPerSecond)),
                        publishP50: Figure(rounds.map(\.latency.p50)), publishP99: Figure(rounds.map(\.latency.p99)),
                        hangardCPUPerMessage: Figure(rounds.map(\.serverCPUMicrosPerCall)),
                        getStatePerSecond: gets.isEmpty ? nil : Figure(gets.map(\.callsPerSecond)),
                        getStateP50: gets.isEmpty ? nil : Figure(gets.map(\.latency.p50)),
                        getStateP99: gets.isEmpty ? nil : Figure(gets.map(\.latency.p99)),
                        hangardCPUPerGetState: gets.isEmpty ? nil : Figure(gets.map(\.serverCPUMicrosPerCall)),
                        ratioToGetState: paired.isEmpty ? nil : Figure(paired)))
            }
        }
        var deliveries: [Delivery] = []
        let combinations = [PubSubScenario.sqliteComponent, PubSubScenario.memoryComponent].flatMap { component in
            [PubSubDelivery.streaming, .push].map { (component, $0) }
        }
        for (component, way) in combinations {
            for kind in [PubSubPhaseResult.Kind.halfRate, .lowRate, .lowRateFlooded] {
                let rounds = delivery.filter { $0.component == component && $0.delivery == way && $0.kind == kind }
                guard let first = rounds.first else { continue }
                let alone = rounds.compactMap { flooded -> (PubSubPhaseResult, PubSubPhaseResult)? in
                    delivery.first {
                        $0.round == flooded.round && $0.component == component && $0.delivery == way
                            && $0.kind == .lowRate
                    }.map { (flooded, $0) }
                }
                let isFlooded = kind == .lowRateFlooded && !alone.isEmpty
                deliveries.append(
                    Delivery(
                        component: component, kind: kind, delivery: first.delivery, rounds: rounds.count,
                        offeredPerSecond: Figure(rounds.map(\.publish.offeredPerSecond)),
                        deliveredPerSecond: Figure(rounds.map { Double($0.delivered) / $0.seconds }),
                        undelivered: rounds.reduce(0) { $0 + $1.undelivered },
                        publishP50: Figure(rounds.map(\.publish.latency.p50)),
                        publishP99: Figure(rounds.map(\.publish.latency.p99)),
                        deliverP50: Figure(rounds.map(\.deliveryLatency.p50)),
                        deliverP99: Figure(rounds.map(\.deliveryLatency.p99)),
                        hangardCPUPerMessage: Figure(rounds.map(\.hangardCPUMicrosPerMessage)),
                        p50RatioToAlone: isFlooded
                            ? Figure(alone.map { $0.0.deliveryLatency.p50 / max(1, $0.1.deliveryLatency.p50) }) : nil,
                        p99RatioToAlone: isFlooded
                            ? Figure(alone.map { $0.0.deliveryLatency.p99 / max(1, $0.1.deliveryLatency.p99) }) : nil,
                        floodPerSecond: kind == .lowRateFlooded
                            ? Figure(rounds.compactMap { $0.flood?.okPerSecond }) : nil))
            }
        }
        var summary = PubSubSummary(throughput: throughput, delivery: deliveries, targets: [])
        summary.targets = summary.checkTargets()
        return summary
    }

    private func checkTargets() -> [BenchReport.TargetCheck] {
        var targets: [BenchReport.TargetCheck] = []
        let concurrent = throughput.filter { $0.component == PubSubScenario.sqliteComponent && $0.callers > 1 }
        for figures in concurrent {
            guard let ratio = figures.ratioToGetState else { continue }
            targets.append(
                BenchReport.TargetCheck(
                    name: "pubsub.sqlite PublishEvent calls/s ÷ GetState calls/s (\(figures.callers) callers each, "
                        + "same round)",
                    target: ">= \(Self.ratioGoal)", measured: ratio.median, unit: "×",
                    met: ratio.median >= Self.ratioGoal, range: ratio.range))
        }
        for half in delivery where half.component == PubSubScenario.sqliteComponent && half.kind == .halfRate {
            let getP99 = concurrent.first?.getStateP99?.median
            let condition =
                getP99.map {
                    "; GetState p99 \(TextTable.format($0, 0)) µs, "
                        + ($0 < Self.getStateP99ConditionMicros ? "under" : "NOT under") + " 1 ms"
                } ?? ""
            targets.append(
                BenchReport.TargetCheck(
                    name: "pubsub.sqlite publish → \(half.delivery.rawValue) delivery p99 at half rate "
                        + "(\(TextTable.format(half.offeredPerSecond.median, 0)) events/s\(condition))",
                    target: "<= \(TextTable.format(Self.p99GoalMicros, 0))", measured: half.deliverP99.median,
                    unit: "µs", met: half.deliverP99.median <= Self.p99GoalMicros, range: half.deliverP99.range))
        }
        return targets
    }

    /// The figures as text for the result table.
    var lines: [String] {
        var lines: [String] = []
        if !throughput.isEmpty {
            lines.append("")
            lines.append("pub/sub: closed-loop PublishEvent beside GetState (memstore) of the same round (medians):")
            var rows = [
                [
                    "component", "callers", "publish/s", "p50 µs", "p99 µs", "hangard CPU µs/msg", "GetState/s",
                    "GetState p99 µs", "GetState CPU µs", "publish ÷ GetState",
                ]
            ]
            for row in throughput {
                rows.append([
                    row.component, "\(row.callers)", Self.text(row.publishPerSecond, 0), Self.text(row.publishP50, 1),
                    Self.text(row.publishP99, 1), Self.text(row.hangardCPUPerMessage, 1),
                    row.getStatePerSecond.map { Self.text($0, 0) } ?? "-",
                    row.getStateP99.map { Self.text($0, 1) } ?? "-",
                    row.hangardCPUPerGetState.map { Self.text($0, 1) } ?? "-",
                    row.ratioToGetState.map { Self.text($0, 2) } ?? "-",
                ])
            }
            lines += TextTable.align(rows, leftColumns: 2).map { "  " + $0 }
        }
        if !delivery.isEmpty {
            lines.append("")
            lines.append("pub/sub: publish → delivery, paced publishers, subscriber answering at once (medians):")
            var rows = [
                [
                    "component", "delivery", "phase", "offered/s", "delivered/s", "missing", "publish p50/p99 µs",
                    "deliver p50 µs", "deliver p99 µs", "hangard CPU µs/msg", "÷ alone p50/p99", "flood OK/s",
                ]
            ]
            for row in delivery {
                rows.append([
                    row.component, row.delivery.rawValue, row.kind.rawValue, Self.text(row.offeredPerSecond, 0),
                    Self.text(row.deliveredPerSecond, 0), "\(row.undelivered)",
                    "\(Self.text(row.publishP50, 0)) / \(Self.text(row.publishP99, 0))", Self.text(row.deliverP50, 0),
                    Self.text(row.deliverP99, 0), Self.text(row.hangardCPUPerMessage, 1),
                    row.p50RatioToAlone.map { "\(Self.text($0, 2)) / \(Self.text(row.p99RatioToAlone!, 2))" } ?? "-",
                    row.floodPerSecond.map { Self.text($0, 0) } ?? "-",
                ])
            }
            lines += TextTable.align(rows, leftColumns: 3).map { "  " + $0 }
        }
        return lines
    }

    /// A median with its range over the rounds.
    private static func text(_ figure: Figure, _ decimals: Int) -> String {
        let median = TextTable.format(figure.median, decimals)
        guard let range = figure.range else { return median }
        return "\(median) (\(TextTable.format(range[0], decimals))–\(TextTable.format(range[1], decimals)))"
    }
}
