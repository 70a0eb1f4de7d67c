import Foundation
import HangarGRPC
import HangarHTTP
import HangarRuntime
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The node: binds every app's sockets and the TCP listeners, serves until shutdown, detaches apps that call
/// `Shutdown`, and on SIGTERM stops accepting, drains calls in flight (bounded), closes components and removes
/// the sockets.
final class NodeService: Service {
    private let runtime: Runtime
    private let options: NodeOptions
    private let layout: SocketLayout
    private let grpc: GRPCServer
    private let http: HTTPServer
    private let logger: Logger
    private let group: any EventLoopGroup

    /// What one listener needs for shutdown: its gRPC side and its HTTP server's group.
    private struct Listeners {
        var grpc: GRPCListener?
        var http: ServiceGroup?
        var socketPaths: [String] = []
    }

    private let listeners = Mutex<[ListenerIdentity: Listeners]>([:])

    init(runtime: Runtime, options: NodeOptions, group: any EventLoopGroup, logger: Logger) {
        self.runtime = runtime
        self.options = options
        self.layout = SocketLayout(root: options.socketRoot)
        self.grpc = GRPCServer(runtime: runtime, group: group, logger: logger)
        self.http = HTTPServer(runtime: runtime, group: group, logger: logger)
        self.logger = logger
        self.group = group
    }

    func run() async throws {
        let (detachRequests, detachContinuation) = AsyncStream.makeStream(of: AppID.self)
        runtime.metadata.setDetachHandler { detachContinuation.yield($0) }
        let ready = ReadinessCounter()

        try await withThrowingDiscardingTaskGroup { tasks in
            // App sockets.
            for (app, spec, _) in runtime.configuration.apps {
                try layout.prepare(app, spec: spec, logger: logger)
                let grpcPath = layout.grpcSocket(app)
                let grpcListener = try await grpc.bind(unixSocket: grpcPath, app: app, spec: spec)
                layout.publish(grpcPath, spec: spec)
                let httpPath = layout.httpSocket(app)
                let httpGroup = try httpServer(
                    .unixDomainSocket(path: httpPath), .app(app), spec: spec, ready: ready
                ) { [layout] in layout.publish(httpPath, spec: spec) }
                listeners.withLock {
                    $0[.app(app)] = Listeners(grpc: grpcListener, http: httpGroup, socketPaths: [grpcPath, httpPath])
                }
                tasks.addTask { try await httpGroup.run() }
            }
            // TCP listeners.
            var tcp = Listeners()
            if let address = options.grpc {
                tcp.grpc = try await grpc.bind(host: address.host, port: address.port)
            }
            if let address = options.http {
                let httpGroup = try httpServer(
                    .hostname(address.host, port: address.port), .tcp, spec: nil, ready: ready
                ) {}
                tcp.http = httpGroup
                tasks.addTask { try await httpGroup.run() }
            }
            listeners.withLock { $0[.tcp] = tcp }
            let expected = listeners.withLock { $0.values.filter { $0.http != nil }.count }
            tasks.addTask { [logger, runtime, options] in
                await ready.wait(for: expected)
                logger.info(
                    "hangard ready",
                    metadata: [
                        "tenants": "\(runtime.configuration.tenants.count)",
                        "apps": "\(runtime.configuration.apps.count)",
                        "components": "\(runtime.configuration.components.count)",
                        "socket.root": "\(options.socketRoot)",
                        "http.listen": "\(options.http.map { "\($0.host):\($0.port)" } ?? "none")",
                        "grpc.listen": "\(options.grpc.map { "\($0.host):\($0.port)" } ?? "none")",
                    ])
            }
            // Apps that call Shutdown.
            tasks.addTask {
                for await app in detachRequests { await self.detach(app) }
            }
            // SIGTERM: stop everything, then end the detach loop so the group can finish.
            tasks.addTask {
                try? await gracefulShutdown()
                await self.stopAll()
                detachContinuation.finish()
            }
        }
    }

    private func httpServer(
        _ address: BindAddress, _ identity: ListenerIdentity, spec: AppSpec?, ready: ReadinessCounter,
        onRunning: @escaping @Sendable () -> Void
    ) throws -> ServiceGroup {
        let server = try http.makeServer(address: address, listener: identity, peerCheck: spec) { _ in
            onRunning()
            ready.signal()
        }
        return ServiceGroup(configuration: .init(services: [server], logger: logger))
    }

    /// Closes one app's sockets after its calls in flight finish; the rest of the node keeps serving.
    private func detach(_ app: AppID) async {
        guard let entry = listeners.withLock({ $0.removeValue(forKey: .app(app)) }) else { return }
        logger.notice(
            "app detached by its Shutdown call; its sockets are closed",
            metadata: ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)"])
        await stop(entry)
    }

    private func stopAll() async {
        logger.info("shutting down: draining calls in flight", metadata: ["drain.timeout": "\(options.drainTimeout)"])
        let all = listeners.withLock { entries in
            defer { entries.removeAll() }
            return Array(entries.values)
        }
        await withDiscardingTaskGroup { group in
            for entry in all { group.addTask { await self.stop(entry) } }
        }
        let loop = group.any()
        try? await runtime.components.close(on: loop).get()
        logger.info("hangard stopped")
    }

    private func stop(_ entry: Listeners) async {
        await withDiscardingTaskGroup { group in
            if let grpc = entry.grpc { group.addTask { await grpc.drain(timeout: self.options.drainTimeout) } }
            if let http = entry.http { group.addTask { await http.triggerGracefulShutdown() } }
        }
        for path in entry.socketPaths { layout.removeSocket(path) }
    }
}

/// Counts listeners that are up, so that "ready" is logged once all are.
final class ReadinessCounter: Sendable {
    private let state = Mutex<(count: Int, waiters: [(Int, CheckedContinuation<Void, Never>)])>((0, []))

    func signal() {
        let resume = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count += 1
            let count = state.count
            let ready = state.waiters.filter { $0.0 <= count }.map(\.1)
            state.waiters.removeAll { $0.0 <= count }
            return ready
        }
        for continuation in resume { continuation.resume() }
    }

    func wait(for expected: Int) async {
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if state.count >= expected { return true }
                state.waiters.append((expected, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }
}
