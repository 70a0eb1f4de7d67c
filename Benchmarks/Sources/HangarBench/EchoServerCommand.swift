import ArgumentParser
import Foundation
import HangarComponents
@_spi(Benchmarks) import HangarGRPC
import HangarRuntime
import Logging
import NIOCore
import NIOPosix

/// `hangar-bench echo-server`: Hangar's own gRPC server with trivial methods and nothing behind them (no state
/// store): `/hangar.bench.v1.Echo/Echo`; `/dapr.proto.runtime.v1.AppCallback/OnInvoke`, which answers an
/// `InvokeResponse` with the request's data, so that the same process is the invoked app of the `invoke` scenario,
/// called directly and through hangard; and the server stream `/hangar.bench.v1.Echo/Stream` (`EchoStreamSender`),
/// which the `stream` scenario reads directly and proxied by hangard. The bench runs it as a separate process, like hangard, so that both are
/// measured the same way: same client, same kind of socket, same event-loop count, CPU read from `/proc`.
struct EchoServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-server",
        abstract: "Serve the trivial echo gRPC method on a Unix socket until SIGTERM (used by the bench).")

    /// What the server logs once it listens.
    static let readyMarker = "echo ready"

    @Option(help: "Unix socket path to listen on.")
    var socket: String

    @Option(help: "Event-loop threads (default: one per core, as hangard).")
    var threads: Int = System.coreCount

    func run() async throws {
        let app = AppID(namespace: "bench", appId: "echo")
        let gate = Self.gate(for: app)
        var service = GRPCService()
        service.unary("/hangar.bench.v1.Echo/Echo", Hangar_Bench_V1_EchoRequest.self) { request, call in
            var response = Hangar_Bench_V1_EchoResponse()
            response.payload = request.payload
            return .success(response)
        }
        service.unary(BenchRequests.onInvokePath, Dapr_Proto_Common_V1_InvokeRequest.self) { request, call in
            var response = Dapr_Proto_Common_V1_InvokeResponse()
            response.data = request.data
            response.contentType = request.contentType
            return .success(response)
        }
        service.serverStreaming(BenchRequests.streamPath, Hangar_Bench_V1_StreamRequest.self) { request, call in
            EchoStreamSender.start(request, call)
        }
        var logger = Logger(label: "echo-server")
        logger.logLevel = .warning
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        let server = GRPCServer.listeners(service: service, gate: gate, group: group, logger: logger)
        _ = try await server.bind(unixSocket: socket, identity: .app(app))
        FileHandle.standardOutput.write(Data("\(Self.readyMarker)\n".utf8))
        // Serves until SIGTERM or SIGINT; a bench fixture has nothing to drain, so it just exits.
        let (signals, continuation) = AsyncStream.makeStream(of: Int32.self)
        let sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { continuation.yield(number) }
            source.resume()
            return source
        }
        for await _ in signals { break }
        for source in sources { source.cancel() }
        try await group.shutdownGracefully()
    }

    /// The same gate as hangard's for the one `app` a bench server serves, with quotas far above what a benchmark
    /// reaches (the echo server's, and the `pubsub` scenario's push receiver's).
    static func gate(for app: AppID) -> Gate {
        let unlimited = Quotas(
            requestsPerSecond: 100_000_000, burst: 100_000_000, maxConcurrentRequests: 1_000_000,
            maxConnections: 1_000_000)
        return Gate(
            registry: TenantRegistry(
                configuration: NodeConfiguration(
                    tenants: [
                        TenantSpec(namespace: app.namespace, apps: [AppSpec(appId: app.appId)], quotas: unlimited)
                    ],
                    components: []),
                maxRequestBytes: 4 << 20))
    }
}
