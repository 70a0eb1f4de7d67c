extension PhaseResult {
    /// One result per phase, in first-seen order: the round with the median server CPU per call (the lower
    /// middle one for an even count), annotated with the spread over every round.
    static func medians(_ results: [PhaseResult]) -> [PhaseResult] {
        var order: [String] = []
        var byKey: [String: [PhaseResult]] = [:]
        for result in results {
            if byKey[result.key] == nil { order.append(result.key) }
            byKey[result.key, default: []].append(result)
        }
        return order.map { key in
            let runs = byKey[key]!.sorted { $0.serverCPUMicrosPerCall < $1.serverCPUMicrosPerCall }
            var median = runs[(runs.count - 1) / 2]
            guard runs.count > 1 else { return median }
            func range(_ value: (PhaseResult) -> Double) -> [Double] {
                let values = runs.map(value)
                return [values.min()!, values.max()!]
            }
            median.rounds = runs.count
            median.serverCPUMicrosPerCallRange = range(\.serverCPUMicrosPerCall)
            median.callsPerSecondRange = range(\.callsPerSecond)
            median.p50Range = range(\.latency.p50)
            return median
        }
    }
}
