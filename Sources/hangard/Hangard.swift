import ArgumentParser
import AsyncHTTPClient
import Foundation
import HangarComponents
import HangarGRPC
import HangarHTTP
import HangarPostgres
import HangarRedis
import HangarRuntime
import HangarSQLite
import HangarSystemd
import HangarTransport
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `hangard`: the node daemon. Parses flags, loads configuration, builds the runtime and both front-ends, and runs
/// them in one `ServiceGroup` until SIGTERM.
@main
struct Hangard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hangard",
        abstract: "Hangar: one Dapr-compatible runtime per node, serving many apps over Unix sockets.",
        discussion: """
            With no flags, runs the development default: tenant 'default' with app 'default', tokenless TCP access \
            mapped to it, an embedded SQLite state store named 'statestore' and an embedded SQLite pub/sub broker \
            named 'pubsub'.
            """)

    @Option(
        help: "Directory of Dapr resource YAML (Component). Default: the embedded 'statestore' and 'pubsub' components.")
    var resources: String?

    @Option(help: "Directory of Tenant YAML (hangar.dev/v1alpha1). Default: tenant 'default' with app 'default'.")
    var tenancy: String?

    @Option(help: "Where app socket directories are created. Default: $XDG_RUNTIME_DIR/hangar or /tmp/hangar-<uid>.")
    var socketRoot: String?

    @Option(
        help: "Where embedded components keep their files. Default: $XDG_STATE_HOME/hangar or ~/.local/state/hangar.")
    var dataDir: String?

    @Option(help: "TCP address of the HTTP API (HOST:PORT), or 'none'.")
    var httpListen: String = "127.0.0.1:3500"

    @Option(help: "TCP address of the gRPC API (HOST:PORT), or 'none'.")
    var grpcListen: String = "127.0.0.1:50001"

    @Option(help: "TCP address of the Prometheus endpoint, GET /metrics (HOST:PORT, port 0 for any), or 'none'.")
    var metricsListen: String = "127.0.0.1:9090"

    @Option(help: "Largest request message or body accepted, in bytes.")
    var maxRequestBytes: Int = 4 * 1024 * 1024

    @Option(
        help: """
            Bytes of requests the node may hold buffered for all tenants at once (partial messages and bodies, \
            requests waiting for their answer); past it calls that would buffer more are refused and the heaviest \
            connection is closed. Default: half the cgroup memory limit, else 256 MiB.
            """)
    var maxBufferedBytes: Int?

    @Option(help: "Seconds to let calls in flight finish on shutdown or detach.")
    var drainTimeout: Double = 10

    @Option(
        help: """
            Seconds within which a request's headers must be complete once begun (HTTP/2: also the connection \
            preface); 0 turns it off.
            """)
    var headerTimeout: Double = 10

    @Option(
        help: """
            Seconds an unfinished request message or body may go without progress (--request-progress-bytes) \
            before it is ended (gRPC DEADLINE_EXCEEDED, HTTP 408); streams idle between messages are exempt; 0 \
            turns it off.
            """)
    var requestProgressTimeout: Double = 10

    @Option(
        help: """
            Bytes a request must bring within each --request-progress-timeout to count as progress (or the rest of \
            its message or body); a client trickling fewer is ended as if it had stopped.
            """)
    var requestProgressBytes: Int = 1024

    @Option(help: "Seconds after which a connection with no request in progress is closed (HTTP/2 with GOAWAY); 0 turns it off.")
    var idleTimeout: Double = 300

    @Option(
        help: """
            Upgrades: 'auto' takes the listening sockets over from a hangard already running on the same \
            --socket-root (it drains and exits) and otherwise starts afresh; 'required' exits when there is none; \
            'never' binds fresh sockets.
            """)
    var takeOver: Takeover.Mode = .auto

    @Option(
        help: """
            After handing its sockets to a successor and draining: 'exit' (0), or 'wait' for SIGTERM first \
            (Kubernetes, where an exited container would be restarted and take the sockets back).
            """)
    var afterHandOver: AfterHandOver = .exit

    @Option(
        help: """
            Seconds between checks of the --tenancy/--resources files for changes, besides inotify; \
            0 turns live reconfiguration off.
            """)
    var watchInterval: Double = 2

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(help: "text, json or journal (native systemd journal entries with fields); auto: journal when standard error is the journal, else text.")
    var logFormat: String = "auto"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown --log-level '\(logLevel)'")
        }
        guard ["auto", "text", "json", "journal"].contains(logFormat) else {
            throw ValidationError("--log-format must be auto, text, json or journal")
        }
        guard maxRequestBytes > 0 else { throw ValidationError("--max-request-bytes must be positive") }
        if let maxBufferedBytes, maxBufferedBytes < maxRequestBytes {
            throw ValidationError(
                "--max-buffered-bytes (\(maxBufferedBytes)) must be at least --max-request-bytes (\(maxRequestBytes))")
        }
        guard drainTimeout >= 0 else { throw ValidationError("--drain-timeout must not be negative") }
        for (value, flag) in [
            (headerTimeout, "--header-timeout"), (requestProgressTimeout, "--request-progress-timeout"),
            (idleTimeout, "--idle-timeout"),
        ] where !(value >= 0 && value <= 86_400) {
            throw ValidationError("\(flag) must be a number of seconds from 0 (off) to 86400, not \(value)")
        }
        guard requestProgressBytes >= 1 && requestProgressBytes <= 1 << 30 else {
            throw ValidationError("--request-progress-bytes must be from 1 to 1073741824, not \(requestProgressBytes)")
        }
        guard watchInterval >= 0 else { throw ValidationError("--watch-interval must not be negative") }
        _ = try ListenAddress(httpListen, flag: "--http-listen")
        _ = try ListenAddress(grpcListen, flag: "--grpc-listen")
        _ = try ListenAddress(metricsListen, flag: "--metrics-listen")
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let format = logFormat == "auto" ? (Systemd.standardErrorIsJournal ? "journal" : "text") : logFormat
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                switch format {
                case "json": JSONLogHandler(label: label)
                case "journal": JournalLogHandler(label: label)
                default: StreamLogHandler.standardError(label: label)
                }
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "hangard")
        let http = try ListenAddress(httpListen, flag: "--http-listen")
        let grpc = try ListenAddress(grpcListen, flag: "--grpc-listen")
        let metrics = try ListenAddress(metricsListen, flag: "--metrics-listen")
        let environment = ProcessInfo.processInfo.environment
        var options = NodeOptions(
            socketRoot: socketRoot ?? Self.defaultSocketRoot(environment),
            dataDirectory: dataDir ?? Self.defaultDataDirectory(environment),
            http: http, grpc: grpc, metrics: metrics,
            drainTimeout: .milliseconds(Int64(drainTimeout * 1000)),
            timeouts: ConnectionTimeouts(
                header: Self.timeout(headerTimeout), progress: Self.timeout(requestProgressTimeout),
                progressBytes: requestProgressBytes, idle: Self.timeout(idleTimeout)),
            tenancyDirectory: tenancy, resourcesDirectory: resources,
            watchInterval: watchInterval > 0 ? .milliseconds(Int64(watchInterval * 1000)) : nil,
            inherited: InheritedListeners.take(http: http, grpc: grpc, metrics: metrics, logger: logger),
            environment: environment)

        var componentRegistry = ComponentRegistry()
        HangarComponents.register(into: &componentRegistry)
        HangarSQLite.register(into: &componentRegistry)
        HangarPostgres.register(into: &componentRegistry)
        HangarRedis.register(into: &componentRegistry)

        let configuration: NodeConfiguration
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let appHTTPClient = AppHTTPClient(group: group)
        let threadPool = NIOThreadPool(numberOfThreads: max(2, System.coreCount))
        let runtime: Runtime
        var takeover: Takeover?
        do {
            configuration = try NodeConfiguration.load(
                tenancyDirectory: tenancy, resourcesDirectory: resources, registry: componentRegistry,
                environment: environment, logger: logger)
            try SocketLayout(root: options.socketRoot).validate(configuration)
            try FileManager.default.createDirectory(
                atPath: options.dataDirectory, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
            threadPool.start()
            runtime = try Runtime(
                configuration: configuration, dataDirectory: options.dataDirectory, maxRequestBytes: maxRequestBytes,
                componentRegistry: componentRegistry, eventLoopGroup: group, threadPool: threadPool,
                retireTimeout: .milliseconds(Int64(drainTimeout * 1000)),
                appChannelFactory: Self.appChannelFactory(
                    layout: SocketLayout(root: options.socketRoot), httpClient: appHTTPClient,
                    maxResponseBytes: maxRequestBytes, logger: logger),
                buffers: BufferBudget(limit: maxBufferedBytes ?? BufferBudget.defaultLimit()),
                logger: logger)
            // Only a valid configuration goes on to take over: an invalid one exits above and below, and the running
            // hangard, never contacted, keeps serving.
            if takeOver != .never {
                takeover = try await Takeover.connect(socketRoot: options.socketRoot, logger: logger)
                if let takeover {
                    let handed = takeover.inheritedListeners(http: http, grpc: grpc, metrics: metrics)
                    for role in InheritedListeners.Role.allCases {
                        guard let socket = handed[role] else { continue }
                        if let systemd = options.inherited[role] { close(systemd.descriptor) }
                        options.inherited[role] = socket
                    }
                } else if takeOver == .required {
                    throw TakeoverMissing(path: "\(options.socketRoot)/\(UpgradeControl.fileName)")
                }
            }
        } catch let error as ConfigurationError {
            FileHandle.standardError.write(Data("hangard: invalid configuration: \(error)\n".utf8))
            Systemd.notify("STATUS=invalid configuration: \(error)")
            try? await appHTTPClient.shutdown()
            throw ExitCode(2)
        } catch {
            FileHandle.standardError.write(Data("hangard: cannot start: \(error)\n".utf8))
            Systemd.notify("STATUS=cannot start: \(error)")
            try? await appHTTPClient.shutdown()
            throw ExitCode(1)
        }
        let supervisor = ServiceManagerLink(runtime: runtime, group: group, logger: logger)
        let upgrade = UpgradeControl(socketRoot: options.socketRoot, drainTimeout: options.drainTimeout, logger: logger)
        let node = NodeService(
            runtime: runtime, options: options, supervisor: supervisor, group: group, takeover: takeover,
            upgrade: upgrade, logger: logger)
        // The group stops services in reverse order: the node drains first; then the systemd watchdog (fed while
        // calls drain) stops, the subscription sources stop fetching, the app channels' health probes stop and the
        // channels close, the component host closes the components, the upgrade control tells a successor that they
        // are closed, and the metrics endpoint (still scraped while the node drains) stops.
        let loops: [any Service] = [
            upgrade, runtime.components,
            AppChannelHealthService(channels: runtime.appChannels, pushDelivery: runtime.pushDelivery, group: group),
            SubscriptionSourcesService(sources: runtime.subscriptionSources), supervisor,
        ]
        var running: [any Service] = loops + [node]
        if options.metrics != nil || options.inherited.metrics != nil {
            // The node starts once the metrics endpoint listens.
            let (listening, continuation) = AsyncStream.makeStream(of: Void.self)
            running = [
                MetricsEndpoint(
                    runtime: runtime, address: options.metrics ?? ListenAddress(host: "0.0.0.0", port: 0),
                    inheritedSocket: options.inherited.metrics, group: group, logger: logger,
                    listening: continuation, upgrade: upgrade),
            ] + loops + [
                AfterMetricsListen(listening: listening, service: node),
            ]
        }
        let services = ServiceGroup(
            configuration: .init(
                services: running, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        upgrade.setShutdown { await services.triggerGracefulShutdown() }
        do {
            try await services.run()
        } catch {
            takeover?.abandon("the successor failed to start: \(error)")
            logger.error("hangard stopped on error", metadata: ["error": "\(error)"])
            try? await appHTTPClient.shutdown()
            try? await threadPool.shutdownGracefully()
            try? await group.shutdownGracefully()
            throw ExitCode(1)
        }
        try? await appHTTPClient.shutdown()
        try? await threadPool.shutdownGracefully()
        try? await group.shutdownGracefully()
        if upgrade.handedOver, afterHandOver == .wait {
            logger.notice("upgrade: handed over and drained; idle until SIGTERM (--after-hand-over wait)")
            await Self.waitForTermination()
        }
    }

    /// `--after-hand-over`.
    enum AfterHandOver: String, ExpressibleByArgument, CaseIterable {
        case exit, wait
    }

    /// Returns on SIGTERM or SIGINT (the service group, which handled them, has ended).
    static func waitForTermination() async {
        let (signals, continuation) = AsyncStream.makeStream(of: Void.self)
        let sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { continuation.yield() }
            source.resume()
            return source
        }
        var iterator = signals.makeAsyncIterator()
        _ = await iterator.next()
        sources.forEach { $0.cancel() }
    }

    /// How the runtime reaches each app's app channel, at the declared address or at `app-<appId>-grpc.socket`
    /// (`-http.socket`) in the app's directory: gRPC apps through `GRPCAppChannel`, HTTP apps through
    /// `HTTPAppChannel` on the node's one HTTP client.
    static func appChannelFactory(
        layout: SocketLayout, httpClient: AppHTTPClient, maxResponseBytes: Int, logger: Logger
    ) -> AppChannelFactory {
        { app, spec in
            let address = spec.address ?? .unix(path: layout.appChannelSocket(app, spec.protocol))
            return switch spec.protocol {
            case .grpc:
                GRPCAppChannel(
                    app: app, address: address, maxResponseBytes: maxResponseBytes, appApiToken: spec.appApiToken,
                    logger: logger)
            case .http:
                HTTPAppChannel(
                    app: app, address: address, client: httpClient.client, maxResponseBytes: maxResponseBytes,
                    appApiToken: spec.appApiToken)
            }
        }
    }

    /// A timeout flag's seconds as a duration; 0 is off (nil).
    static func timeout(_ seconds: Double) -> Duration? {
        seconds > 0 ? .milliseconds(Int64(seconds * 1000)) : nil
    }

    /// `--take-over required` found no running hangard.
    struct TakeoverMissing: Error, CustomStringConvertible {
        var path: String
        var description: String { "--take-over required: no hangard answers on \(path)" }
    }

    static func defaultSocketRoot(_ environment: [String: String]) -> String {
        if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/hangar" }
        return "/tmp/hangar-\(getuid())"
    }

    static func defaultDataDirectory(_ environment: [String: String]) -> String {
        if let state = environment["XDG_STATE_HOME"], !state.isEmpty { return state + "/hangar" }
        return (environment["HOME"] ?? NSHomeDirectory()) + "/.local/state/hangar"
    }
}
