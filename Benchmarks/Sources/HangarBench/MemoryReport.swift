/// What the memory scenario of `run` measured: hangard's memory idle with one app declared, idle with many
/// declared, and with part of those connected; and what one more declared or connected app costs. MB are 10^6
/// bytes, KB 10^3.
struct MemoryReport: Codable, Sendable {
    /// hangard's memory in one state.
    struct Footprint: Codable, Sendable {
        var appsDeclared: Int
        var appsConnected: Int
        var rssMB: Double
        var anonymousRSSMB: Double
        var fileRSSMB: Double
        /// Proportional set size: shared pages divided among the processes mapping them.
        var pssMB: Double
        /// Unique set size: private pages only (`Private_Clean` + `Private_Dirty`).
        var ussMB: Double
        var threads: Int

        init(_ sample: MemorySample, declared: Int, connected: Int) {
            appsDeclared = declared
            appsConnected = connected
            rssMB = BenchServer.megabytes(sample.rssKiB)
            anonymousRSSMB = BenchServer.megabytes(sample.anonymousRSSKiB)
            fileRSSMB = BenchServer.megabytes(sample.fileRSSKiB)
            pssMB = BenchServer.megabytes(sample.pssKiB)
            ussMB = BenchServer.megabytes(sample.ussKiB)
            threads = sample.threads
        }
    }

    /// The memory one more app costs, from the difference between two footprints, in KB.
    struct Marginal: Codable, Sendable {
        var rssKB: Double
        var anonymousRSSKB: Double
        var fileRSSKB: Double
        var pssKB: Double
        var ussKB: Double

        init(from start: Footprint, to end: Footprint, apps: Int) {
            let perApp = { (value: (Footprint) -> Double) in (value(end) - value(start)) * 1000 / Double(max(1, apps)) }
            rssKB = perApp(\.rssMB)
            anonymousRSSKB = perApp(\.anonymousRSSMB)
            fileRSSKB = perApp(\.fileRSSMB)
            pssKB = perApp(\.pssMB)
            ussKB = perApp(\.ussMB)
        }
    }

    /// What each connected app holds open.
    var connection = "one gRPC connection to the app's gRPC socket, with one GetState answered (no HTTP connection)"
    /// A separate hangard with one app declared, idle.
    var idleOneApp: Footprint
    /// A hangard with many apps declared, idle, then with the first of them connected.
    var idleDeclared: Footprint
    var connected: Footprint
    /// (idle with many − idle with one) ÷ (many − 1).
    var perDeclaredApp: Marginal
    /// (connected − idle with many) ÷ connected apps.
    var perConnectedApp: Marginal

    init(idleOneApp: Footprint, idleDeclared: Footprint, connected: Footprint) {
        self.idleOneApp = idleOneApp
        self.idleDeclared = idleDeclared
        self.connected = connected
        perDeclaredApp = Marginal(
            from: idleOneApp, to: idleDeclared, apps: idleDeclared.appsDeclared - idleOneApp.appsDeclared)
        perConnectedApp = Marginal(from: idleDeclared, to: connected, apps: connected.appsConnected)
    }

    /// The memory targets: RSS idle (one app declared) and with many apps declared and part connected.
    var targets: [BenchReport.TargetCheck] {
        [
            BenchReport.TargetCheck(
                name: "hangard RSS idle (1 app declared)", target: "<= 25", measured: idleOneApp.rssMB, unit: "MB",
                met: idleOneApp.rssMB <= 25),
            BenchReport.TargetCheck(
                name: "hangard RSS (\(connected.appsDeclared) apps declared, \(connected.appsConnected) connected)",
                target: "<= 40", measured: connected.rssMB, unit: "MB", met: connected.rssMB <= 40),
        ]
    }

    /// The table for the terminal and BENCHMARKS.md.
    var lines: [String] {
        let format = TextTable.format
        var rows = [["hangard memory", "RSS", "anon", "file", "PSS", "USS", "threads"]]
        for (name, footprint) in [
            ("idle, 1 app declared (MB)", idleOneApp),
            ("idle, \(idleDeclared.appsDeclared) apps declared (MB)", idleDeclared),
            ("\(connected.appsDeclared) apps declared, \(connected.appsConnected) connected (MB)", connected),
        ] {
            rows.append(
                [name]
                    + [
                        footprint.rssMB, footprint.anonymousRSSMB, footprint.fileRSSMB, footprint.pssMB,
                        footprint.ussMB,
                    ]
                    .map { format($0, 1) } + ["\(footprint.threads)"])
        }
        for (name, marginal) in [
            ("per declared app (KB)", perDeclaredApp), ("per connected app (KB)", perConnectedApp),
        ] {
            rows.append(
                [name]
                    + [marginal.rssKB, marginal.anonymousRSSKB, marginal.fileRSSKB, marginal.pssKB, marginal.ussKB]
                    .map { format($0, 1) } + ["-"])
        }
        return ["", "memory: each connected app has \(connection); PSS and USS from /proc/<pid>/smaps_rollup"]
            + TextTable.align(rows)
    }
}
