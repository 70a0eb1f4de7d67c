import ArgumentParser

/// The options of every command that starts hangard: which binary, which components, where the results go and
/// whether the temporary files stay.
struct HangardOptions: ParsableArguments {
    @Option(help: "The hangard binary to start.")
    var hangard = ".build/release/hangard"

    @Option(help: "Directory of the Component YAML to load (stores 'memstore' and 'sqlstore').")
    var resources = "bench/resources"

    @Option(help: "Write the results as JSON to this path.")
    var json: String?

    @Flag(help: "Keep the temporary directories (configs, logs, SQLite files) instead of removing them.")
    var keep = false

    /// Prints the report, and writes it as JSON with `--json`.
    func publish(_ text: String, _ report: some Encodable) throws {
        print(text)
        if let json {
            try TextTable.writeJSON(report, to: json)
            print("results written to \(json)")
        }
    }

    /// Removes the fixture's directory, or says where it is kept with `--keep`.
    func finish(_ fixture: BenchFixture) {
        if keep { print("configs and logs kept in \(fixture.root)") } else { fixture.remove() }
    }
}
