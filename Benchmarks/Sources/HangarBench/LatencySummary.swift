/// Percentiles of client-observed latency, in microseconds, from every sample of a phase (sorted; no histogram).
struct LatencySummary: Codable, Sendable {
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    /// `samples` in nanoseconds.
    init(samples: [UInt64]) {
        guard !samples.isEmpty else {
            self.init(p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0)
            return
        }
        let sorted = samples.sorted()
        func percentile(_ fraction: Double) -> Double {
            Double(sorted[Int((Double(sorted.count - 1) * fraction).rounded())]) / 1000
        }
        self.init(
            p50: percentile(0.5), p90: percentile(0.9), p99: percentile(0.99), p999: percentile(0.999),
            max: Double(sorted[sorted.count - 1]) / 1000,
            mean: Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000)
    }

    init(p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
        self.p50 = p50
        self.p90 = p90
        self.p99 = p99
        self.p999 = p999
        self.max = max
        self.mean = mean
    }
}
