import Foundation
import NIOCore

/// Starting the servers `run` measures, and preparing their loads.
extension BenchRunCommand {
    /// Starts hangard, measures its RSS idle and with every app connected (one gRPC connection and one call
    /// each), then prepares the selected loads: it stores the keys they read, and for the HTTP scenarios opens
    /// one HTTP connection per concurrent caller.
    func startDaemon(
        fixture: BenchFixture, group: any EventLoopGroup, selected: Set<BenchScenario>, budget: PatienceBudget
    ) async throws -> BenchServer {
        let (process, secondsToReady) = try await ManagedProcess.startHangard(
            executable: common.hangard, fixture: fixture)
        var server: BenchServer?
        var connections: [GRPCClientConnection] = []
        do {
            progress("hangard ready in \(Self.format(secondsToReady, 2)) s with \(apps) apps (pid \(process.pid))")
            try await Task.sleep(for: .seconds(1))
            let idle = try ProcessSample.read(pid: process.pid)
            for index in 0..<apps {
                connections.append(
                    try await GRPCClientConnection.connect(unixSocket: fixture.grpcSocket(app: index), group: group))
            }
            let firstCall = try BenchRequests.getState(store: "memstore", key: "absent")
            try await GRPCClientConnection.callEach(
                connections, GRPCClientRequest(path: BenchRequests.getStatePath, message: firstCall))
            try await Task.sleep(for: .milliseconds(500))
            let connected = try ProcessSample.read(pid: process.pid)
            let info = Self.serverInfo(
                path: common.hangard, apps: apps, secondsToReady: secondsToReady, idle: idle, connected: connected)
            progress(
                "hangard RSS: idle \(Self.format(info.idleRSSMB, 1)) MB, "
                    + "\(apps) apps connected \(Self.format(info.connectedRSSMB, 1)) MB")
            let generator = LoadGenerator(
                serverPID: process.pid, serverName: "hangard", patience: budget, attempts: attempts)
            server = BenchServer(
                process: process, connections: connections, connectApps: appsConnected, apps: apps,
                generator: generator, loads: [], info: info)
            server!.loads = try await grpcStateLoads(on: server!, selected: selected)
            server!.loads += try await publishLoads(on: server!, selected: selected)
            if selected.contains(.getHTTP) || selected.contains(.saveHTTP) {
                server!.httpConnections = try await connectHTTP(fixture: fixture, group: group)
                server!.loads += try await httpStateLoads(on: server!, selected: selected)
            }
            return server!
        } catch {
            _ = await process.terminate(timeout: .seconds(10))
            await GRPCClientConnection.close(connections)
            await HTTPClientConnection.close(server?.httpConnections ?? [])
            throw error
        }
    }

    /// The `state.redis` and `state.postgresql` components of the backend scenarios (issue 15).
    static let redisStore = "redisstore"
    static let postgreSQLStore = "pgstore"

    /// The keys caller `caller` cycles through.
    private var keySets: [[String]] {
        (0..<concurrency).map { caller in (0..<keys).map { BenchRequests.key(caller: caller, index: $0) } }
    }

    /// GetState and SaveState over gRPC on each selected store, after storing the keys.
    private func grpcStateLoads(on server: BenchServer, selected: Set<BenchScenario>) async throws
        -> [LoadGenerator.Load]
    {
        var loads: [LoadGenerator.Load] = []
        let stores: [(name: String, get: BenchScenario, save: BenchScenario)] = [
            ("memstore", .getMemory, .saveMemory), ("sqlstore", .getSQLite, .saveSQLite),
            (Self.redisStore, .getRedis, .saveRedis), (Self.postgreSQLStore, .getPostgreSQL, .savePostgreSQL),
        ]
        let keySets = keySets
        let value = BenchRequests.value(bytes: valueBytes)
        // The callers' connections, as the concurrent phase has them (the sequential one uses the first): hangard
        // keeps state per app, so each caller's keys are stored through the app it calls.
        let connections = server.connections(callers: concurrency).grpc
        for store in stores where selected.contains(store.get) || selected.contains(store.save) {
            try await prefill(store.name, keySets: keySets, value: value, connections: connections)
            if selected.contains(store.get) {
                let requests = try keySets.map { keys in
                    GRPCClientRequest.batch(
                        path: BenchRequests.getStatePath,
                        try keys.map { try BenchRequests.getState(store: store.name, key: $0) })
                }
                loads.append(
                    LoadGenerator.Load(
                        operation: "GetState", store: store.name, requests: .grpc(requests),
                        calleePID: store.get.isBackend ? backendPID : nil))
            }
            if selected.contains(store.save) {
                let requests = try keySets.map { keys in
                    GRPCClientRequest.batch(
                        path: BenchRequests.saveStatePath,
                        try keys.map { try BenchRequests.saveState(store: store.name, keys: [$0], value: value) })
                }
                loads.append(
                    LoadGenerator.Load(
                        operation: "SaveState", store: store.name, requests: .grpc(requests),
                        calleePID: store.save.isBackend ? backendPID : nil))
            }
        }
        return loads
    }

    /// Stores every key the callers will use (one bulk SaveState per caller, on its connection) and reads one back.
    private func prefill(
        _ store: String, keySets: [[String]], value: Data, connections: [GRPCClientConnection]
    ) async throws {
        var futures: [EventLoopFuture<ByteBuffer>] = []
        for (caller, keys) in keySets.enumerated() {
            let connection = connections[caller % connections.count]
            futures.append(
                connection.unary(
                    path: BenchRequests.saveStatePath,
                    message: try BenchRequests.saveState(store: store, keys: keys, value: value)))
        }
        for future in futures { _ = try await future.get() }
        let response = try await connections[0].unary(
            path: BenchRequests.getStatePath, message: try BenchRequests.getState(store: store, key: keySets[0][0])
        ).get()
        guard try BenchRequests.decodeGetState(response) == value else {
            throw BenchError("GetState on \(store) did not return the value just saved")
        }
    }

    /// Starts the echo server (this executable, `echo-server`) with as many connections, all to its one socket, as
    /// hangard's concurrent gRPC phases use; with `echo`, its load is the Echo method (the `invoke` scenario adds
    /// `OnInvoke` itself).
    func startEcho(
        fixture: BenchFixture, group: any EventLoopGroup, budget: PatienceBudget, echo: Bool
    ) async throws -> BenchServer {
        let process = try ManagedProcess.spawn(
            name: "echo-server", executable: Self.ownExecutable(),
            arguments: ["echo-server", "--socket", fixture.echoSocket], logPath: fixture.log("echo"))
        var connections: [GRPCClientConnection] = []
        do {
            let secondsToReady = try await process.waitForLog(EchoServerCommand.readyMarker, timeout: .seconds(30))
            try await Task.sleep(for: .seconds(1))
            let idle = try ProcessSample.read(pid: process.pid)
            for _ in 0..<appsConnected {
                connections.append(try await GRPCClientConnection.connect(unixSocket: fixture.echoSocket, group: group))
            }
            let payload = BenchRequests.value(bytes: valueBytes)
            let request = GRPCClientRequest(
                path: BenchRequests.echoPath, message: try BenchRequests.echo(payload: payload))
            try await GRPCClientConnection.callEach(connections, request)
            let response = try await connections[0].call(request).get()
            guard try BenchRequests.decodeEcho(response) == payload else {
                throw BenchError("echo returned another payload")
            }
            try await Task.sleep(for: .milliseconds(500))
            let connected = try ProcessSample.read(pid: process.pid)
            let info = Self.serverInfo(
                path: Self.ownExecutable() + " echo-server", apps: 1, secondsToReady: secondsToReady, idle: idle,
                connected: connected)
            let load = LoadGenerator.Load(
                operation: "Echo", store: nil, requests: .grpc(Array(repeating: [request], count: concurrency)))
            let generator = LoadGenerator(
                serverPID: process.pid, serverName: "echo", patience: budget, attempts: attempts)
            return BenchServer(
                process: process, connections: connections, connectApps: appsConnected, apps: 1,
                generator: generator, loads: echo ? [load] : [], info: info)
        } catch {
            _ = await process.terminate(timeout: .seconds(5))
            await GRPCClientConnection.close(connections)
            throw error
        }
    }

    private static func serverInfo(
        path: String, apps: Int, secondsToReady: Double, idle: ProcessSample, connected: ProcessSample
    ) -> BenchReport.ServerProcess {
        BenchReport.ServerProcess(
            path: path, apps: apps, secondsToReady: secondsToReady, idleRSSMB: BenchServer.megabytes(idle.rssKiB),
            idleAnonymousRSSMB: BenchServer.megabytes(idle.anonymousRSSKiB),
            idleFileRSSMB: BenchServer.megabytes(idle.fileRSSKiB), idleThreads: idle.threads,
            connectedRSSMB: BenchServer.megabytes(connected.rssKiB), connectedThreads: connected.threads)
    }

    private static func ownExecutable() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}
