/// What `hangar-bench attach` measured, as written by `--json` and printed as a table. Times are milliseconds.
struct AttachReport: Codable, Sendable {
    struct Options: Codable, Sendable {
        var apps: Int
        var samples: Int
        var pauseSeconds: Double
        var pollMilliseconds: Double
    }

    /// One new tenant file, from the rename into the tenancy directory to an answer on its app's socket, and from
    /// its removal to the socket file being gone.
    struct Sample: Codable, Sendable {
        var index: Int
        /// Rename → the gRPC socket file exists.
        var socketAppearedMs: Double
        /// Rename → a GetState on a new connection to that socket answered.
        var attachMs: Double
        /// Unlink → the gRPC socket file is gone.
        var detachMs: Double
        /// The `reload.ms` hangard logged for the reload that added, and the one that removed, the app.
        var attachReloadMs: Double?
        var detachReloadMs: Double?
    }

    /// p50, p90 and max of one measure over the samples.
    struct Spread: Codable, Sendable {
        var p50: Double
        var p90: Double
        var max: Double
        var min: Double

        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            func percentile(_ fraction: Double) -> Double {
                sorted[Int((Double(sorted.count - 1) * fraction).rounded())]
            }
            p50 = percentile(0.5)
            p90 = percentile(0.9)
            max = sorted[sorted.count - 1]
            min = sorted[0]
        }
    }

    var date: String
    var command: String
    var machine: BenchReport.Machine
    var options: Options
    var hangardSecondsToReady: Double
    var samples: [Sample] = []
    var attach: Spread?
    var socketAppeared: Spread?
    var detach: Spread?
    var attachReload: Spread?
    var detachReload: Spread?

    mutating func summarise() {
        attach = Spread(samples.map(\.attachMs))
        socketAppeared = Spread(samples.map(\.socketAppearedMs))
        detach = Spread(samples.map(\.detachMs))
        attachReload = Spread(samples.compactMap(\.attachReloadMs))
        detachReload = Spread(samples.compactMap(\.detachReloadMs))
    }

    /// The report as text for a terminal and for BENCHMARKS.md.
    func render() -> String {
        let format = TextTable.format
        var lines = [
            "hangar-bench attach \(date) — \(machine.cores) cores, \(machine.cpuModel), Linux \(machine.kernel)",
            "\(options.apps) apps declared in tenant 'bench'; \(samples.count) samples: a new Tenant file with one app "
                + "renamed into --tenancy, then removed; polled every \(format(options.pollMilliseconds, 0)) ms",
            "",
        ]
        var rows = [["measure", "p50 ms", "p90 ms", "max ms", "min ms"]]
        let measures: [(String, Spread?)] = [
            ("attach: rename → GetState answered on the new socket", attach),
            ("  of which rename → socket file exists", socketAppeared),
            ("  hangard's own reload.ms (log) for the attach", attachReload),
            ("detach: unlink → socket file gone", detach),
            ("  hangard's own reload.ms (log) for the detach", detachReload),
        ]
        for (name, spread) in measures {
            guard let spread else { continue }
            rows.append([
                name, format(spread.p50, 1), format(spread.p90, 1), format(spread.max, 1), format(spread.min, 1),
            ])
        }
        lines += TextTable.align(rows)
        return lines.joined(separator: "\n")
    }
}
