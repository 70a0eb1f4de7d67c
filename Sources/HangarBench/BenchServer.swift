import NIOCore

/// A server under measurement: its process, the bench's connections to it, the generator that measures it, and
/// the loads it is put under in every round.
struct BenchServer: Sendable {
    var process: ManagedProcess
    var connections: [GRPCClientConnection]
    var generator: LoadGenerator
    var loads: [LoadGenerator.Load]
    var info: BenchReport.ServerProcess

    /// Notes the memory after the rounds.
    mutating func recordAfterLoad() throws {
        let sample = try ProcessSample.read(pid: process.pid)
        info.afterLoadRSSMB = BenchServer.megabytes(sample.rssKiB)
        info.peakRSSMB = BenchServer.megabytes(sample.peakRSSKiB)
    }

    /// SIGTERM with every connection still open (the graceful drain is part of what is measured), then closes
    /// the bench's side.
    mutating func stop() async {
        let (status, seconds) = await process.terminate(timeout: .seconds(30))
        info.shutdownSeconds = seconds
        info.exitStatus = status
        await Self.close(connections)
    }

    static func close(_ connections: [GRPCClientConnection]) async {
        for connection in connections { await connection.close() }
    }

    /// KiB (as `/proc` reports) to MB of 10^6 bytes (as the targets are written).
    static func megabytes(_ kibibytes: Int) -> Double { Double(kibibytes) * 1024 / 1_000_000 }
}
