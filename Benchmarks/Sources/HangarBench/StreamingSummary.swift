/// What the `stream` scenario measured, over its rounds: each figure is taken per round (the phases of a round ran
/// seconds apart, so ratios are paired within it), then the median over the rounds, with their range.
struct StreamingSummary: Codable, Sendable {
    /// A median over the rounds and, with several rounds, [min, max] (as the invocation figures have them).
    typealias Figure = InvocationOverhead.Figure

    /// Rounds that had every phase.
    var rounds: Int
    var payloadBytes: Int
    /// The slow consumer's credit rate, messages/s.
    var slowCreditRate: Double
    /// The fast consumer's messages/s: the echo server's stream read directly (the reference), through hangard
    /// beside the slow one, and the same with the GetState loop too; through ÷ direct.
    var directFastPerSecond: Figure
    var fastPerSecond: Figure
    var fastWithUnaryPerSecond: Figure
    var fastRatio: Figure
    /// The slow consumer's messages/s consumed, and received, beside the fast one (and with the GetState loop).
    var slowPerSecond: Figure
    var slowReceivedPerSecond: Figure
    var slowWithUnaryPerSecond: Figure
    /// hangard's CPU per streamed message (both consumers', phase `streams`), µs; the echo server's per message it
    /// sent directly and per message it sent through hangard; hangard's ÷ the echo server's direct one.
    var hangardCPUPerMessage: Figure
    var echoCPUPerMessageDirect: Figure
    var echoCPUPerMessageThrough: Figure?
    var cpuRatioToEcho: Figure
    /// hangard's CPU per GetState, alone on the connection, µs; per streamed message ÷ per GetState.
    var hangardCPUPerGetState: Figure
    var cpuRatioToGetState: Figure
    /// GetState on the connection: p50 and p99 alone and with the two streams running, µs; with ÷ alone; and
    /// calls/s alone and with.
    var unaryAloneP50: Figure
    var unaryAloneP99: Figure
    var unaryWithStreamsP50: Figure
    var unaryWithStreamsP99: Figure
    var unaryP50Ratio: Figure
    var unaryP99Ratio: Figure
    var unaryAlonePerSecond: Figure
    var unaryWithStreamsPerSecond: Figure
    /// Without hangard: Echo on the echo server's connection, alone and beside the fast consumer's stream on it,
    /// p50 and p99 (µs), with ÷ alone, calls/s.
    var directUnaryAloneP50: Figure
    var directUnaryAloneP99: Figure
    var directWithStreamP50: Figure
    var directWithStreamP99: Figure
    var directP50Ratio: Figure
    var directP99Ratio: Figure
    var directUnaryAlonePerSecond: Figure
    var directWithStreamPerSecond: Figure
    /// The control: GetState on another connection while the two streams run, p50 and p99 (µs), ÷ alone, calls/s.
    var unaryElsewhereP50: Figure
    var unaryElsewhereP99: Figure
    var unaryElsewhereP50Ratio: Figure
    var unaryElsewhereP99Ratio: Figure
    var unaryElsewherePerSecond: Figure
    /// hangard's RSS, MB: before any stream through it (the start of the first `unary-alone`), once the first
    /// streams were warm (the start of the first round's `streams` phase), the highest sample over every phase
    /// with streams, and at the end of the last one; and per round, its growth over the measured phases with
    /// streams (end − start, summed), which stays near 0 when the slow consumer's backlog is bounded.
    var hangardRSSBeforeStreams: Double
    var hangardRSSStreamsWarm: Double
    var hangardRSSPeak: Double
    var hangardRSSEnd: Double
    var hangardRSSGrowth: Figure
    /// The highest other load of any phase behind these figures, in cores.
    var maxOtherBusyCores: Double

    /// Nil unless some round has every phase.
    static func measure(_ phases: [StreamPhaseResult], payloadBytes: Int) -> StreamingSummary? {
        typealias Round = [StreamPhaseResult.Kind: StreamPhaseResult]
        let rounds: [Round] = Set(phases.map(\.round)).sorted().compactMap { round in
            let byKind = Dictionary(
                phases.filter { $0.round == round }.map { ($0.kind, $0) }, uniquingKeysWith: { first, _ in first })
            return byKind.count == StreamPhaseResult.Kind.allCases.count ? byKind : nil
        }
        guard let first = rounds.first, let last = rounds.last else { return nil }
        func figure(_ value: (Round) -> Double?) -> Figure { Figure(rounds.map { value($0) ?? 0 }) }
        func direct(_ round: Round) -> StreamPhaseResult { round[.direct]! }
        func directAlone(_ round: Round) -> StreamPhaseResult { round[.directUnaryAlone]! }
        func directBoth(_ round: Round) -> StreamPhaseResult { round[.directWithUnary]! }
        func alone(_ round: Round) -> StreamPhaseResult { round[.unaryAlone]! }
        func streams(_ round: Round) -> StreamPhaseResult { round[.streams]! }
        func both(_ round: Round) -> StreamPhaseResult { round[.streamsWithUnary]! }
        func elsewhere(_ round: Round) -> StreamPhaseResult { round[.streamsWithUnaryElsewhere]! }
        let echoThrough = rounds.compactMap { streams($0).calleeCPUMicrosPerMessage }
        let streamPhases = rounds.flatMap { [streams($0), both($0), elsewhere($0)] }
        return StreamingSummary(
            rounds: rounds.count, payloadBytes: payloadBytes,
            slowCreditRate: streams(first).slowCreditRate ?? 0,
            directFastPerSecond: figure { direct($0).fastMessagesPerSecond },
            fastPerSecond: figure { streams($0).fastMessagesPerSecond },
            fastWithUnaryPerSecond: figure { both($0).fastMessagesPerSecond },
            fastRatio: figure { (streams($0).fastMessagesPerSecond ?? 0) / (direct($0).fastMessagesPerSecond ?? 1) },
            slowPerSecond: figure { streams($0).slowMessagesPerSecond },
            slowReceivedPerSecond: figure { streams($0).slowReceivedPerSecond },
            slowWithUnaryPerSecond: figure { both($0).slowMessagesPerSecond },
            hangardCPUPerMessage: figure { streams($0).serverCPUMicrosPerMessage },
            echoCPUPerMessageDirect: figure { direct($0).serverCPUMicrosPerMessage },
            echoCPUPerMessageThrough: echoThrough.count == rounds.count ? Figure(echoThrough) : nil,
            cpuRatioToEcho: figure {
                (streams($0).serverCPUMicrosPerMessage ?? 0) / (direct($0).serverCPUMicrosPerMessage ?? 1)
            },
            hangardCPUPerGetState: figure { alone($0).serverCPUMicrosPerUnaryCall },
            cpuRatioToGetState: figure {
                (streams($0).serverCPUMicrosPerMessage ?? 0) / (alone($0).serverCPUMicrosPerUnaryCall ?? 1)
            },
            unaryAloneP50: figure { alone($0).unaryLatency?.p50 },
            unaryAloneP99: figure { alone($0).unaryLatency?.p99 },
            unaryWithStreamsP50: figure { both($0).unaryLatency?.p50 },
            unaryWithStreamsP99: figure { both($0).unaryLatency?.p99 },
            unaryP50Ratio: figure { (both($0).unaryLatency?.p50 ?? 0) / (alone($0).unaryLatency?.p50 ?? 1) },
            unaryP99Ratio: figure { (both($0).unaryLatency?.p99 ?? 0) / (alone($0).unaryLatency?.p99 ?? 1) },
            unaryAlonePerSecond: figure { alone($0).unaryCallsPerSecond },
            unaryWithStreamsPerSecond: figure { both($0).unaryCallsPerSecond },
            directUnaryAloneP50: figure { directAlone($0).unaryLatency?.p50 },
            directUnaryAloneP99: figure { directAlone($0).unaryLatency?.p99 },
            directWithStreamP50: figure { directBoth($0).unaryLatency?.p50 },
            directWithStreamP99: figure { directBoth($0).unaryLatency?.p99 },
            directP50Ratio: figure {
                (directBoth($0).unaryLatency?.p50 ?? 0) / (directAlone($0).unaryLatency?.p50 ?? 1)
            },
            directP99Ratio: figure {
                (directBoth($0).unaryLatency?.p99 ?? 0) / (directAlone($0).unaryLatency?.p99 ?? 1)
            },
            directUnaryAlonePerSecond: figure { directAlone($0).unaryCallsPerSecond },
            directWithStreamPerSecond: figure { directBoth($0).unaryCallsPerSecond },
            unaryElsewhereP50: figure { elsewhere($0).unaryLatency?.p50 },
            unaryElsewhereP99: figure { elsewhere($0).unaryLatency?.p99 },
            unaryElsewhereP50Ratio: figure {
                (elsewhere($0).unaryLatency?.p50 ?? 0) / (alone($0).unaryLatency?.p50 ?? 1)
            },
            unaryElsewhereP99Ratio: figure {
                (elsewhere($0).unaryLatency?.p99 ?? 0) / (alone($0).unaryLatency?.p99 ?? 1)
            },
            unaryElsewherePerSecond: figure { elsewhere($0).unaryCallsPerSecond },
            hangardRSSBeforeStreams: alone(first).serverRSSMBStart,
            hangardRSSStreamsWarm: streams(first).serverRSSMBStart,
            hangardRSSPeak: streamPhases.map(\.serverRSSMBPeak).max() ?? 0,
            hangardRSSEnd: elsewhere(last).serverRSSMBEnd,
            hangardRSSGrowth: figure { round in
                [streams(round), both(round), elsewhere(round)].reduce(0) {
                    $0 + $1.serverRSSMBEnd - $1.serverRSSMBStart
                }
            },
            maxOtherBusyCores: rounds.flatMap(\.values).compactMap(\.otherBusyCores).max() ?? 0)
    }

    /// The summary as the bench prints it under the table.
    var lines: [String] {
        func value(_ figure: Figure, _ decimals: Int) -> String {
            TextTable.format(figure.median, decimals)
                + (figure.range.map {
                    " (rounds \(TextTable.format($0[0], decimals))–\(TextTable.format($0[1], decimals)))"
                } ?? "")
        }
        func ratio(_ figure: Figure) -> String {
            TextTable.format(figure.median, 2) + "×"
                + (figure.range.map { " (rounds \(TextTable.format($0[0], 2))–\(TextTable.format($0[1], 2)))" } ?? "")
        }
        let rate = TextTable.format(slowCreditRate, 0)
        return [
            "",
            "server stream (\(payloadBytes)-byte messages) bench → hangard → echo server (proxied with dapr-app-id), "
                + "a fast and a slow consumer (credit \(rate) msg/s) and a GetState loop on one connection, "
                + "medians over \(rounds) round(s):",
            "  fast consumer: \(value(fastPerSecond, 0)) msg/s through hangard = \(ratio(fastRatio)) the "
                + "\(value(directFastPerSecond, 0)) msg/s read directly from the echo server; "
                + "\(value(fastWithUnaryPerSecond, 0)) msg/s with the GetState loop",
            "  slow consumer: \(value(slowPerSecond, 0)) msg/s consumed, \(value(slowReceivedPerSecond, 0)) received "
                + "(credit rate \(rate)); \(value(slowWithUnaryPerSecond, 0)) msg/s with the GetState loop",
            "  hangard CPU \(value(hangardCPUPerMessage, 2)) µs per streamed message = \(ratio(cpuRatioToEcho)) the "
                + "echo server's \(value(echoCPUPerMessageDirect, 2)) µs per message sent directly, "
                + "\(ratio(cpuRatioToGetState)) hangard's \(value(hangardCPUPerGetState, 1)) µs per GetState; "
                + "echo server \(echoCPUPerMessageThrough.map { value($0, 2) } ?? "-") µs per message through hangard",
            "  GetState on the connection: alone p50 \(value(unaryAloneP50, 1)) / p99 \(value(unaryAloneP99, 1)) µs "
                + "(\(value(unaryAlonePerSecond, 0))/s); with the streams p50 \(value(unaryWithStreamsP50, 1)) / "
                + "p99 \(value(unaryWithStreamsP99, 1)) µs (\(value(unaryWithStreamsPerSecond, 0))/s)",
            "    with ÷ alone: p50 \(ratio(unaryP50Ratio)), p99 \(ratio(unaryP99Ratio))",
            "  without hangard, Echo on the echo server's connection: alone p50 \(value(directUnaryAloneP50, 1)) / "
                + "p99 \(value(directUnaryAloneP99, 1)) µs (\(value(directUnaryAlonePerSecond, 0))/s); beside the "
                + "fast stream p50 \(value(directWithStreamP50, 1)) / p99 \(value(directWithStreamP99, 1)) µs "
                + "(\(value(directWithStreamPerSecond, 0))/s); ÷ alone: p50 \(ratio(directP50Ratio)), p99 "
                + "\(ratio(directP99Ratio))",
            "  control, GetState on another connection while the streams run: p50 \(value(unaryElsewhereP50, 1)) / "
                + "p99 \(value(unaryElsewhereP99, 1)) µs (\(value(unaryElsewherePerSecond, 0))/s); ÷ alone: p50 "
                + "\(ratio(unaryElsewhereP50Ratio)), p99 \(ratio(unaryElsewhereP99Ratio))",
            "  hangard RSS: \(TextTable.format(hangardRSSBeforeStreams, 1)) MB before any stream, "
                + "\(TextTable.format(hangardRSSStreamsWarm, 1)) MB once the first were warm, peak "
                + "\(TextTable.format(hangardRSSPeak, 1)) MB, \(TextTable.format(hangardRSSEnd, 1)) MB at the end; "
                + "growth over a round's measured stream phases \(value(hangardRSSGrowth, 2)) MB",
            "  other load: at most \(TextTable.format(maxOtherBusyCores, 2)) cores in any of these phases",
        ]
    }
}

extension StreamingSummary {
    /// Every stream phase of every round, one row each.
    static func table(_ phases: [StreamPhaseResult]) -> [String] {
        func number(_ value: Double?, _ decimals: Int) -> String { value.map { TextTable.format($0, decimals) } ?? "-" }
        var rows = [
            [
                "round", "phase", "server", "fast msg/s", "slow msg/s", "slow recv/s", "backlog", "unary/s",
                "p50 µs",
                "p99 µs", "server CPU µs/msg", "µs/call", "echo CPU µs/msg", "RSS start MB", "peak", "end",
                "client CPU %", "other load",
            ]
        ]
        for phase in phases {
            rows.append([
                "\(phase.round)", phase.kind.rawValue, phase.server, number(phase.fastMessagesPerSecond, 0),
                number(phase.slowMessagesPerSecond, 0), number(phase.slowReceivedPerSecond, 0),
                phase.slowBacklog.map(String.init) ?? "-",
                number(phase.unaryCallsPerSecond, 0), number(phase.unaryLatency?.p50, 1),
                number(phase.unaryLatency?.p99, 1), number(phase.serverCPUMicrosPerMessage, 2),
                number(phase.serverCPUMicrosPerUnaryCall, 1), number(phase.calleeCPUMicrosPerMessage, 2),
                number(phase.serverRSSMBStart, 1), number(phase.serverRSSMBPeak, 1), number(phase.serverRSSMBEnd, 1),
                number(phase.clientCPUMicros / phase.seconds / 10_000, 0), number(phase.otherBusyCores, 2),
            ])
        }
        return TextTable.align(rows, leftColumns: 3)
    }
}
