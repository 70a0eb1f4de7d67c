/// The whole machine's CPU time from the first line of `/proc/stat`, in clock ticks: to tell how much else ran
/// during a phase, and how much the hypervisor took (steal).
struct SystemCPUSample: Sendable {
    /// user + nice + system + irq + softirq, over every core.
    var busyTicks: Int
    var stealTicks: Int
    var totalTicks: Int

    static func read() -> SystemCPUSample? {
        guard let stat = ProcessSample.readProcFile("/proc/stat"),
            let line = stat.split(separator: "\n").first, line.hasPrefix("cpu ")
        else { return nil }
        let values = line.split(separator: " ").dropFirst().compactMap { Int($0) }
        guard values.count >= 8 else { return nil }
        // user nice system idle iowait irq softirq steal [guest guest_nice, already counted in user and nice]
        let busy = values[0] + values[1] + values[2] + values[5] + values[6]
        return SystemCPUSample(busyTicks: busy, stealTicks: values[7], totalTicks: values[0..<8].reduce(0, +))
    }
}

extension SystemCPUSample {
    /// What else ran between two samples taken `seconds` apart, in cores: the machine's busy time minus
    /// `knownMicros` (the CPU the bench and the processes it measures used meanwhile); and the share of the
    /// machine's time the hypervisor stole, in percent. Nil when either sample is missing.
    static func otherLoad(
        from start: SystemCPUSample?, to end: SystemCPUSample?, knownMicros: Double, seconds: Double
    ) -> (otherCores: Double?, stealPercent: Double?) {
        guard let start, let end, end.totalTicks > start.totalTicks else { return (nil, nil) }
        let busyMicros = Double(end.busyTicks - start.busyTicks) / Double(ProcessSample.ticksPerSecond) * 1_000_000
        return (
            max(0, (busyMicros - knownMicros) / 1_000_000 / seconds),
            Double(end.stealTicks - start.stealTicks) / Double(end.totalTicks - start.totalTicks) * 100
        )
    }

    /// Waits, up to `limit`, for a half-second window in which the machine is busy with less than `threshold`
    /// cores (the bench and its server idle meanwhile, so this is everything else); returns the last busy level.
    static func waitForQuiet(threshold: Double, limit: Duration) async throws -> Double {
        let deadline = ContinuousClock.now + limit
        var busyCores = 0.0
        repeat {
            guard let start = read() else { return 0 }
            try await Task.sleep(for: .milliseconds(500))
            guard let end = read(), end.totalTicks > start.totalTicks else { return 0 }
            // Busy ticks over half a second, summed over every core: in cores.
            busyCores = Double(end.busyTicks - start.busyTicks) / (Double(ProcessSample.ticksPerSecond) * 0.5)
            if busyCores < threshold { return busyCores }
        } while ContinuousClock.now < deadline
        return busyCores
    }
}
