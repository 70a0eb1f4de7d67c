import Foundation
import HangarGRPC
import HangarHTTP
import HangarRuntime
import HangarSystemd
import HangarTransport
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import HangarSync

/// The node: binds every app's sockets and the TCP listeners, serves until shutdown, follows changes of the
/// tenancy and resource files (binding new apps' sockets, closing removed apps' after their calls in flight),
/// detaches apps that call `Shutdown`, and on SIGTERM stops accepting, drains calls in flight (bounded) and removes
/// the sockets; the component host, stopped after it, then closes the components.
///
/// Upgrades: started with a `Takeover`, it serves the predecessor's sockets instead of binding its own, and opens
/// the components only once the predecessor has closed its own (see `Takeover` for the order). Once ready it offers
/// its own listeners to a successor through `UpgradeControl`; after a hand-over its shutdown leaves every socket
/// file in place.
final class NodeService: Service {
    private let runtime: Runtime
    private let options: NodeOptions
    private let layout: SocketLayout
    private let supervisor: ServiceManagerLink
    private let grpc: ListenerBootstrap<ListenerIdentity>
    private let http: ListenerBootstrap<ListenerIdentity>
    private let logger: Logger
    private let group: any EventLoopGroup

    /// One listener identity's parts, for closing them: its gRPC and its HTTP listener.
    private struct Listeners {
        var grpc: Listener?
        var http: Listener?
        /// The socket files' inodes once bound: a file replaced since (by another hangard) is not this one's to
        /// remove.
        var socketInodes: [String: ino_t] = [:]
        var directory: String?
    }

    private let listeners = Locked<[ListenerIdentity: Listeners]>([:])
    private let stopping = Atomic<Bool>(false)
    /// The predecessor this process takes over from, if any.
    private let takeover: Takeover?
    /// Where a successor asks for this process's listeners.
    private let upgrade: UpgradeControl?

    init(
        runtime: Runtime, options: NodeOptions, supervisor: ServiceManagerLink, group: any EventLoopGroup,
        takeover: Takeover? = nil, upgrade: UpgradeControl? = nil, logger: Logger
    ) {
        self.takeover = takeover
        self.upgrade = upgrade
        self.runtime = runtime
        self.supervisor = supervisor
        self.options = options
        self.layout = SocketLayout(root: options.socketRoot)
        self.grpc = GRPCServer.listeners(runtime: runtime, timeouts: options.timeouts, group: group, logger: logger)
        self.http = HTTPServer.listeners(runtime: runtime, timeouts: options.timeouts, group: group, logger: logger)
        self.logger = logger
        self.group = group
    }

    func run() async throws {
        let (detachRequests, detachContinuation) = AsyncStream.makeStream(of: AppID.self)
        runtime.metadata.setDetachHandler { detachContinuation.yield($0) }
        let watcher = makeWatcher()

        let started = ContinuousClock.now
        if let takeover {
            // The predecessor stops accepting and drains; new connections wait in the backlog until this process
            // accepts, below, once the components are open (a call finds them open, it is not refused).
            try await takeover.takeOver()
            await takeover.released()
            await runtime.components.initialise()
        }
        // Otherwise components open (on the thread pool) while the sockets are bound; calls to one still opening are
        // refused with UNAVAILABLE, and /v1.0/healthz answers 500 until both are done.
        async let componentsInitialised: Void = initialiseComponents(unless: takeover != nil)
        for (app, _, _) in runtime.configuration.apps { try await attach(app) }
        var tcp = Listeners()
        if let inherited = options.inherited.grpc {
            tcp.grpc = try await grpc.adopt(socket: inherited.descriptor, address: inherited.address, identity: .tcp)
        } else if let address = options.grpc {
            tcp.grpc = try await grpc.bind(host: address.host, port: address.port, identity: .tcp)
        }
        if let inherited = options.inherited.http {
            tcp.http = try await http.adopt(socket: inherited.descriptor, address: inherited.address, identity: .tcp)
        } else if let address = options.http {
            tcp.http = try await http.bind(host: address.host, port: address.port, identity: .tcp)
        }
        listeners.withLock { $0[.tcp] = tcp }
        runtime.health.markListenersUp()
        await componentsInitialised
        if let takeover {
            let layout = layout
            let closed = takeover.closeUnused { layout.removeSocket($0) }
            logger.notice(
                "upgrade: serving the predecessor's sockets",
                metadata: [
                    "predecessor.pid": "\(takeover.predecessor)", "sockets.taken": "\(takeover.socketCount - closed.count)",
                    "sockets.closed": "\(closed.count)", "takeover.ms": "\((ContinuousClock.now - started).milliseconds)",
                ])
        }
        let configuration = runtime.configuration
        let counts = runtime.health.counts
        logger.info(
            "hangard ready",
            metadata: [
                "tenants": "\(configuration.tenants.count)",
                "apps": "\(configuration.apps.count)",
                "components": "\(configuration.components.count)",
                "components.down": "\(counts[.down, default: 0])",
                "socket.root": "\(options.socketRoot)",
                "http.listen": "\(Self.shown(options.http, options.inherited.http))",
                "grpc.listen": "\(Self.shown(options.grpc, options.inherited.grpc))",
                "watching": "\(watcher == nil ? "no" : "yes")",
                "startup.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
        let supervisor = supervisor
        supervisor.ready(tookOver: takeover != nil)
        upgrade?.ready { [weak self] in self?.handoverSockets() ?? [] }

        // The systemd watchdog and the apps' health probes are services of their own, earlier in the group: they
        // run until this one has drained every call.
        await withDiscardingTaskGroup { tasks in
            // Apps that call Shutdown.
            tasks.addTask {
                for await app in detachRequests { await self.detach(app, reason: .shutdownCall) }
            }
            // Configuration changes.
            if let watcher {
                tasks.addTask {
                    // Changes from here on are seen; one made since the configuration was loaded at start-up is
                    // picked up by this first reload (a no-op when nothing changed).
                    let changes = watcher.changes()
                    await self.reload()
                    watcher.setFiles(self.watchedFiles())
                    supervisor.updateStatus()
                    for await _ in changes {
                        await self.reload()
                        watcher.setFiles(self.watchedFiles())
                        supervisor.updateStatus()
                    }
                }
            }
            // SIGTERM: stop everything, then end the loops so the group can finish.
            tasks.addTask {
                try? await gracefulShutdown()
                supervisor.stopping()
                watcher?.stop()
                await self.stopAll()
                detachContinuation.finish()
            }
        }
    }

    private func initialiseComponents(unless done: Bool) async {
        if !done { await runtime.components.initialise() }
    }

    /// Every listener this process serves, with its descriptor, for a successor (`UpgradeControl`).
    private func handoverSockets() -> [(HandoverSocket, CInt)] {
        listeners.withLock { entries in
            entries.flatMap { identity, entry in
                [(entry.grpc, "grpc"), (entry.http, "http")].compactMap { listener, role -> (HandoverSocket, CInt)? in
                    guard let listener else { return nil }
                    if case .tcp = identity {
                        return (.tcp(role: role, address: listener.address), listener.handoverDescriptor)
                    }
                    guard listener.address.hasPrefix("unix:") else { return nil }
                    return (.unix(path: String(listener.address.dropFirst(5))), listener.handoverDescriptor)
                }
            }
        }
    }

    // MARK: Apps

    /// Creates the app's directory and binds its two sockets (or serves the predecessor's); the app is served once
    /// this returns.
    private func attach(_ app: AppID) async throws {
        guard let spec = runtime.registry.app(app) else { return }
        let grpcPath = layout.grpcSocket(app)
        let httpPath = layout.httpSocket(app)
        try layout.prepare(
            app, spec: spec, keeping: Set([grpcPath, httpPath].filter { takeover?.hasUnixSocket($0) == true }),
            logger: logger)
        let grpcListener = try await listen(grpc, grpcPath, app)
        layout.publish(grpcPath, spec: spec)
        do {
            let httpListener = try await listen(http, httpPath, app)
            layout.publish(httpPath, spec: spec)
            listeners.withLock {
                $0[.app(app)] = Listeners(
                    grpc: grpcListener, http: httpListener,
                    socketInodes: [grpcPath: layout.inode(grpcPath), httpPath: layout.inode(httpPath)].compactMapValues {
                        $0
                    },
                    directory: layout.directory(app))
            }
        } catch {
            await grpcListener.drain(timeout: .zero)
            layout.removeSocket(grpcPath)
            throw error
        }
    }

    /// Serves the predecessor's socket at `path` when it handed one over, else binds one.
    private func listen(_ bootstrap: ListenerBootstrap<ListenerIdentity>, _ path: String, _ app: AppID) async throws
        -> Listener
    {
        if let descriptor = takeover?.unixSocket(path) {
            return try await bootstrap.adopt(unixSocket: descriptor, path: path, identity: .app(app))
        }
        return try await bootstrap.bind(unixSocket: path, identity: .app(app))
    }

    /// How a TCP listener is shown in logs.
    static func shown(_ address: ListenAddress?, _ inherited: Systemd.InheritedSocket?) -> String {
        if let inherited { return "\(inherited.address) (inherited)" }
        return address.map { "\($0.host):\($0.port)" } ?? "none"
    }

    enum DetachReason {
        case shutdownCall
        case removed
    }

    /// Closes one app's sockets after its calls in flight finish; the rest of the node keeps serving.
    private func detach(_ app: AppID, reason: DetachReason) async {
        guard let entry = listeners.withLock({ $0.removeValue(forKey: .app(app)) }) else { return }
        let metadata: Logger.Metadata = ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)"]
        switch reason {
        case .shutdownCall: logger.notice("app detached by its Shutdown call; its sockets are closed", metadata: metadata)
        case .removed: logger.notice("app removed from the configuration; its sockets are closed", metadata: metadata)
        }
        await stop(entry)
        if reason == .removed, let directory = entry.directory {
            // Only an empty directory goes (the node made it); the namespace directory too once it is empty.
            rmdir(directory)
            rmdir((directory as NSString).deletingLastPathComponent)
        }
    }

    // MARK: Reconfiguration

    private func makeWatcher() -> ConfigWatcher? {
        let directories = [options.tenancyDirectory, options.resourcesDirectory].compactMap { $0 }
        guard !directories.isEmpty, options.watchInterval != nil else { return nil }
        return ConfigWatcher(
            directories: directories, files: watchedFiles(),
            pollInterval: options.watchInterval ?? .seconds(2))
    }

    /// Files outside the watched directories whose change is a reconfiguration: the apps' token files and the
    /// secret stores' sources (a rotated secret re-creates the components whose `secretKeyRef`s read it).
    private func watchedFiles() -> [String] {
        runtime.configuration.apps.compactMap(\.spec.apiTokenFile) + runtime.components.watchedPaths
    }

    /// Loads the files again and applies what changed. An invalid configuration is reported with its path and
    /// field, and the last good one stays in force.
    func reload() async {
        guard !stopping.load(ordering: .acquiring) else { return }
        let started = ContinuousClock.now
        let configuration: NodeConfiguration
        let change: TenantRegistry.Change
        do {
            configuration = try NodeConfiguration.load(
                tenancyDirectory: options.tenancyDirectory, resourcesDirectory: options.resourcesDirectory,
                registry: runtime.components.registry, environment: options.environment, logger: logger)
            guard configuration != runtime.configuration else {
                // The same files: perhaps a secret store's source changed.
                try runtime.refreshSecrets()
                return
            }
            try layout.validate(configuration)
            change = try runtime.apply(configuration)
        } catch {
            // One line per rejection (a YAML error's excerpt spans lines), with the file and field on their own.
            let metadata: Logger.Metadata = [
                "error": "\(String(describing: error).split(whereSeparator: \.isNewline).joined(separator: " "))",
                "config.path": "\(error.path)", "config.field": "\(error.field)",
            ]
            logger.error("configuration change rejected; the last good configuration stays in force", metadata: metadata)
            return
        }
        for app in change.removed { await detach(app, reason: .removed) }
        var failed: [AppID] = []
        for app in change.added {
            do {
                try await attach(app)
            } catch {
                failed.append(app)
                logger.error(
                    "cannot bind the sockets of a new app",
                    metadata: ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)", "error": "\(error)"])
            }
        }
        for app in change.changed {
            // New uids/gids: the directory and sockets change hands; new connections are checked against them.
            guard let spec = runtime.registry.app(app), listeners.withLock({ $0[.app(app)] != nil }) else { continue }
            do {
                try layout.reown(app, spec: spec, logger: logger)
            } catch {
                logger.error("cannot update the app directory", metadata: ["app.id": "\(app)", "error": "\(error)"])
            }
        }
        logger.info(
            "configuration reloaded",
            metadata: [
                "tenants": "\(configuration.tenants.count)", "apps": "\(configuration.apps.count)",
                "components": "\(configuration.components.count)",
                "apps.added": "\(change.added.map(\.description).joined(separator: ","))",
                "apps.removed": "\(change.removed.map(\.description).joined(separator: ","))",
                "apps.reconfigured": "\(change.reconfigured.count + change.changed.count)",
                "apps.failed": "\(failed.count)",
                "reload.ms": "\((ContinuousClock.now - started).milliseconds)",
            ])
    }

    // MARK: Shutdown

    private func stopAll() async {
        stopping.store(true, ordering: .releasing)
        upgrade?.stopOffering()
        logger.info("shutting down: draining calls in flight", metadata: ["drain.timeout": "\(options.drainTimeout)"])
        let all = listeners.withLock { entries in
            defer { entries.removeAll() }
            return Array(entries.values)
        }
        await withDiscardingTaskGroup { group in
            for entry in all { group.addTask { await self.stop(entry) } }
        }
        logger.info("hangard stopped")
    }

    /// Drains the entry's listeners; each socket file goes as soon as its listener stops accepting (so no new client
    /// finds it), except after a hand-over, when the successor serves these files.
    private func stop(_ entry: Listeners) async {
        let removesFiles = upgrade?.handedOver != true
        let layout = layout
        let remove: @Sendable (Listener) -> Void = { listener in
            guard removesFiles, listener.address.hasPrefix("unix:") else { return }
            let path = String(listener.address.dropFirst(5))
            layout.removeSocket(path, inode: entry.socketInodes[path])
        }
        let timeout = options.drainTimeout
        await withDiscardingTaskGroup { group in
            for listener in [entry.grpc, entry.http].compactMap({ $0 }) {
                group.addTask { await listener.drain(timeout: timeout) { remove(listener) } }
            }
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
