import NIOCore

/// A server under measurement: its process, the bench's connections to it, the generator that measures it, and
/// the loads it is put under in every round.
struct BenchServer: Sendable {
    var process: ManagedProcess
    /// gRPC connections, one per app in app order (the echo server: as many, all to its one socket).
    var connections: [GRPCClientConnection]
    /// HTTP/1.1 connections, one per concurrent caller, connection `i` to app `i % connectApps`'s HTTP socket.
    var httpConnections: [HTTPClientConnection] = []
    /// The apps the concurrent callers are spread over (`--connect-apps`).
    var connectApps: Int
    /// Apps the server serves (the echo server: one socket).
    var apps: Int
    var generator: LoadGenerator
    var loads: [LoadGenerator.Load]
    var info: BenchReport.ServerProcess

    /// What a phase with `callers` callers uses: the first app alone for one caller, else the first `connectApps`
    /// apps' gRPC connections; an HTTP connection per caller.
    func connections(callers: Int) -> BenchConnections {
        let grpc = callers == 1 ? 1 : connectApps
        return BenchConnections(
            grpc: Array(connections.prefix(grpc)), http: Array(httpConnections.prefix(callers)),
            apps: min(callers, connectApps, apps))
    }

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
        await closeConnections()
    }

    func closeConnections() async {
        await GRPCClientConnection.close(connections)
        await HTTPClientConnection.close(httpConnections)
    }

    /// KiB (as `/proc` reports) to MB of 10^6 bytes (as the targets are written).
    static func megabytes(_ kibibytes: Int) -> Double { Double(kibibytes) * 1024 / 1_000_000 }
}
