import Foundation

/// Plain-text tables, number formatting, progress lines and JSON output for every bench report.
enum TextTable {
    /// Columns padded to their widest cell; the first `leftColumns` left-aligned, the rest right-aligned.
    static func align(_ rows: [[String]], leftColumns: Int = 1) -> [String] {
        guard let columns = rows.first?.count else { return [] }
        let widths = (0..<columns).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { column, cell in
                let padding = String(repeating: " ", count: widths[column] - cell.count)
                return column < leftColumns ? cell + padding : padding + cell
            }.joined(separator: "  ")
        }
    }

    static func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }

    /// With its sign, `+` included.
    static func signed(_ value: Double, _ decimals: Int) -> String { String(format: "%+.\(decimals)f", value) }

    /// A goal line: `met    name: measured unit (target …)`.
    static func goal(_ check: BenchReport.TargetCheck, decimals: Int) -> String {
        "  \(check.met ? "met   " : "MISSED") \(check.name): \(format(check.measured, decimals)) \(check.unit) "
            + "(target \(check.target) \(check.unit))"
    }

    /// Writes `value` as pretty-printed JSON to `path`, creating its directory.
    static func writeJSON(_ value: some Encodable, to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let url = URL(fileURLWithPath: path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try encoder.encode(value).write(to: url)
    }

    /// A progress line on stderr, as the `run` command prints them.
    static func progress(_ line: String) {
        FileHandle.standardError.write(Data("· \(line)\n".utf8))
    }
}
