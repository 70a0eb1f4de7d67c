import NIOCore

/// The memory scenario of `run`: starts hangard twice, each time alone on a fixture of its own. First with one app
/// declared, sampled idle; then with `declared` apps, sampled idle and again once the first `connected` apps each
/// hold one gRPC connection and have had one GetState answered.
struct MemoryFootprint {
    var hangard: String
    var resources: String
    var declared: Int
    var connected: Int
    var keep: Bool

    func measure(group: any EventLoopGroup) async throws -> MemoryReport {
        // hangard binds two sockets per app and the bench connects to some: both inherit the bench's limit.
        try FileDescriptorLimit.ensure(2 * declared + connected + 256, for: "the memory scenario")
        let oneApp = try await sample(apps: 1, connect: 0, group: group)
        let many = try await sample(apps: declared, connect: connected, group: group)
        let report = MemoryReport(
            idleOneApp: MemoryReport.Footprint(oneApp.idle, declared: 1, connected: 0),
            idleDeclared: MemoryReport.Footprint(many.idle, declared: declared, connected: 0),
            connected: MemoryReport.Footprint(many.connected ?? many.idle, declared: declared, connected: connected))
        TextTable.progress(
            "memory: RSS idle \(TextTable.format(report.idleOneApp.rssMB, 1)) MB with 1 app, "
                + "\(TextTable.format(report.idleDeclared.rssMB, 1)) MB with \(declared), "
                + "\(TextTable.format(report.connected.rssMB, 1)) MB with \(connected) connected")
        return report
    }

    /// hangard with `apps` apps, 1 s after ready; then, with `connect` above 0, 0.5 s after the first `connect`
    /// apps are connected.
    private func sample(
        apps: Int, connect: Int, group: any EventLoopGroup
    ) async throws -> (idle: MemorySample, connected: MemorySample?) {
        let fixture = try BenchFixture.create(apps: apps, resourcesSource: resources)
        defer { if !keep { fixture.remove() } }
        let (process, seconds) = try await ManagedProcess.startHangard(executable: hangard, fixture: fixture)
        var connections: [GRPCClientConnection] = []
        do {
            TextTable.progress(
                "memory: hangard ready in \(TextTable.format(seconds, 2)) s with \(apps) apps (pid \(process.pid))")
            try await Task.sleep(for: .seconds(1))
            let idle = try MemorySample.read(pid: process.pid)
            var connected: MemorySample?
            if connect > 0 {
                for index in 0..<connect {
                    connections.append(
                        try await GRPCClientConnection.connect(
                            unixSocket: fixture.grpcSocket(app: index), group: group))
                }
                let request = GRPCClientRequest(
                    path: BenchRequests.getStatePath,
                    message: try BenchRequests.getState(store: "memstore", key: "absent"))
                try await GRPCClientConnection.callEach(connections, request)
                try await Task.sleep(for: .milliseconds(500))
                connected = try MemorySample.read(pid: process.pid)
            }
            _ = await process.terminate(timeout: .seconds(30))
            await GRPCClientConnection.close(connections)
            if keep { TextTable.progress("memory: configs and logs kept in \(fixture.root)") }
            return (idle, connected)
        } catch {
            _ = await process.terminate(timeout: .seconds(10))
            await GRPCClientConnection.close(connections)
            throw error
        }
    }
}
