import Foundation

/// The `invoke` scenario's loads: service invocation through hangard, and the same call made directly.
extension BenchRunCommand {
    /// Adds `OnInvoke` on the echo server (direct) to the echo server's loads and `InvokeService` (app `callee`,
    /// method `echo`, a `--value-bytes` payload) to hangard's, after checking that one call of each, on every
    /// connection the phases use, comes back with the payload. Both go to the same echo server process over the
    /// same kind of socket from the same client, so that their difference is what hangard adds; hangard's load
    /// also reads the echo server's CPU, which is then part of neither phase's "other load".
    func addInvocationLoads(to servers: inout [BenchServer]) async throws {
        guard let daemon = servers.firstIndex(where: { $0.generator.serverName == "hangard" }),
            let echo = servers.firstIndex(where: { $0.generator.serverName == "echo" })
        else { throw BenchError("the invoke scenario needs both hangard and the echo server") }
        let payload = BenchRequests.value(bytes: valueBytes)
        let direct = GRPCClientRequest(
            path: BenchRequests.onInvokePath, message: try BenchRequests.onInvoke(payload: payload))
        let through = GRPCClientRequest(
            path: BenchRequests.invokeServicePath,
            message: try BenchRequests.invokeService(id: BenchFixture.calleeAppID, payload: payload))
        try await Self.check(direct, on: servers[echo].connections(callers: concurrency).grpc, returns: payload)
        try await Self.check(through, on: servers[daemon].connections(callers: concurrency).grpc, returns: payload)
        servers[echo].loads.append(
            LoadGenerator.Load(
                operation: "OnInvoke", store: nil, requests: .grpc(Array(repeating: [direct], count: concurrency))))
        servers[daemon].loads.append(
            LoadGenerator.Load(
                operation: "InvokeService", store: nil,
                requests: .grpc(Array(repeating: [through], count: concurrency)),
                calleePID: servers[echo].process.pid))
    }

    /// One call on each connection; every answer must be an `InvokeResponse` carrying `payload`.
    private static func check(
        _ request: GRPCClientRequest, on connections: [GRPCClientConnection], returns payload: Data
    ) async throws {
        let futures = connections.map { $0.call(request) }
        for future in futures {
            guard try BenchRequests.decodeInvokeResponse(try await future.get()) == payload else {
                throw BenchError("an invocation returned another payload")
            }
        }
    }
}
