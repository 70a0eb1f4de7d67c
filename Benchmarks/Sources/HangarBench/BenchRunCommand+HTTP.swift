import NIOCore

/// The HTTP scenarios of `run`: GetState and SaveState on `memstore` through Dapr's HTTP API on the apps' HTTP
/// sockets.
extension BenchRunCommand {
    /// The store the HTTP scenarios use.
    static let httpStore = "memstore"

    /// One HTTP/1.1 connection per concurrent caller, caller `i` to app `i % --connect-apps`'s HTTP socket (the
    /// sequential phase uses the first).
    func connectHTTP(fixture: BenchFixture, group: any EventLoopGroup) async throws -> [HTTPClientConnection] {
        var connections: [HTTPClientConnection] = []
        do {
            for caller in 0..<concurrency {
                connections.append(
                    try await HTTPClientConnection.connect(
                        unixSocket: fixture.httpSocket(app: caller % appsConnected), group: group))
            }
            return connections
        } catch {
            await HTTPClientConnection.close(connections)
            throw error
        }
    }

    /// The selected HTTP loads, after storing every caller's keys (one bulk SaveState per caller, on its own
    /// connection) and reading one back.
    func httpStateLoads(on server: BenchServer, selected: Set<BenchScenario>) async throws -> [LoadGenerator.Load] {
        let store = Self.httpStore
        let value = BenchRequests.value(bytes: valueBytes)
        let connections = server.connections(callers: concurrency).http
        let keySets = (0..<concurrency).map { caller in
            (0..<keys).map { BenchRequests.httpKey(caller: caller, index: $0) }
        }
        for (caller, keys) in keySets.enumerated() {
            _ = try await connections[caller].call(BenchRequests.httpSaveState(store: store, keys: keys, value: value))
                .get()
        }
        // The expected body is part of the request: a different value fails the call.
        _ = try await connections[0].call(BenchRequests.httpGetState(store: store, key: keySets[0][0], value: value))
            .get()
        var loads: [LoadGenerator.Load] = []
        if selected.contains(.getHTTP) {
            let requests = keySets.map { keys in
                keys.map { BenchRequests.httpGetState(store: store, key: $0, value: value) }
            }
            loads.append(LoadGenerator.Load(operation: "GetState", store: store, requests: .http(requests)))
        }
        if selected.contains(.saveHTTP) {
            let requests = keySets.map { keys in
                keys.map { BenchRequests.httpSaveState(store: store, keys: [$0], value: value) }
            }
            loads.append(LoadGenerator.Load(operation: "SaveState", store: store, requests: .http(requests)))
        }
        return loads
    }
}
