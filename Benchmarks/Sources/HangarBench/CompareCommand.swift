import ArgumentParser
import Foundation

/// `hangar-bench compare`: a regression check between two `run` reports (`--json` files). It prints, per phase
/// found in both, server CPU per call, p50, p99, calls/s and RSS: the baseline, the current value, the change and
/// whether it is beyond noise. It reports and never fails on a change: it exits non-zero only when a file cannot
/// be read.
struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare a run's JSON results with a baseline's, flagging changes beyond noise.",
        discussion: """
            Phases are matched by server, operation, store, mode, callers and transport. A change is beyond noise \
            when it exceeds the larger of 15 % and the baseline's own min–max spread over its rounds. Exit status 0 \
            whatever changed; non-zero only when an input cannot be read.
            """)

    @Option(help: "The reference results (e.g. bench/baseline.json).")
    var baseline: String

    @Option(help: "The results to check (e.g. bench-results/latest.json).")
    var current: String

    @Option(help: "Also write the comparison as JSON to this path.")
    var json: String?

    func run() throws {
        let comparison = BenchComparison(baseline: try Self.load(baseline), current: try Self.load(current))
        print(comparison.render())
        if let json {
            try TextTable.writeJSON(comparison, to: json)
            print("comparison written to \(json)")
        }
    }

    private static func load(_ path: String) throws -> BenchReport {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw BenchError("cannot read \(path): \(error.localizedDescription)")
        }
        do {
            return try JSONDecoder().decode(BenchReport.self, from: data)
        } catch {
            throw BenchError("\(path) is not a hangar-bench run report (--json of `hangar-bench run`): \(error)")
        }
    }
}
