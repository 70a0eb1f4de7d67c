import Foundation
import HangarTransport
import Logging
import ServiceLifecycle
import Synchronization
import HangarSync

/// The running hangard's side of an upgrade: its control socket, `<socket-root>/.hangard-upgrade.sock` (mode 0600,
/// same-uid peers only), where a successor hangard asks for every listening socket (`HandoverMessage` describes
/// the conversation, `Takeover` is the successor's side).
///
/// Once the node is ready it listens; a successor that says `hello` gets every listener (the apps' sockets, the TCP
/// listeners, the metrics listener) while this process keeps serving. When the successor says `takeover`, this
/// process shuts down as on SIGTERM, with two differences: no socket file is removed (the successor serves them),
/// and once the components are closed (this service stops after the component host) the successor is told
/// `released`, so that it opens the SQLite files only after this process has closed them.
///
/// A `Service` of the daemon's group, listed before the component host: the group stops it after the node has
/// drained and the components have closed.
final class UpgradeControl: Service, Sendable {
    /// The control socket's file name under the socket root.
    static let fileName = ".hangard-upgrade.sock"

    let path: String
    private let drainTimeout: Duration
    private let logger: Logger
    private let state = Locked(State())
    private let nodeReady = AsyncStream.makeStream(of: Void.self)

    private struct State {
        /// What the node serves now, with the descriptors to hand over (they stay the listeners'; the successor
        /// gets copies).
        var sockets: (@Sendable () -> [(HandoverSocket, CInt)])?
        /// The operator's metrics listener, handed over with the node's.
        var metrics: Listener?
        /// Starts the group's graceful shutdown.
        var shutdown: (@Sendable () async -> Void)?
    }

    private let handedOverFlag = Atomic<Bool>(false)

    /// Whether a successor took over: the node then leaves the socket files where they are.
    var handedOver: Bool { handedOverFlag.load(ordering: .acquiring) }

    init(socketRoot: String, drainTimeout: Duration, logger: Logger) {
        self.path = "\(socketRoot)/\(Self.fileName)"
        self.drainTimeout = drainTimeout
        self.logger = logger
    }

    /// How to shut the process down when a successor takes over (the daemon's `ServiceGroup`).
    func setShutdown(_ shutdown: @escaping @Sendable () async -> Void) {
        state.withLock { $0.shutdown = shutdown }
    }

    /// The metrics endpoint's listener, offered to a successor with the node's (both processes serve it until this
    /// one exits).
    func setMetricsListener(_ listener: Listener) {
        state.withLock { $0.metrics = listener }
    }

    /// The node is serving: from now on a successor may ask for `sockets()`.
    func ready(sockets: @escaping @Sendable () -> [(HandoverSocket, CInt)]) {
        state.withLock { $0.sockets = sockets }
        nodeReady.continuation.yield()
        nodeReady.continuation.finish()
    }

    /// The node is shutting down: a successor that asks now is refused (it starts on its own sockets).
    func stopOffering() {
        state.withLock { $0.sockets = nil }
    }

    func run() async throws {
        // Not before the node is ready: a third hangard must not take over from one still taking over itself.
        var nodeIsReady = false
        for await _ in nodeReady.stream.cancelOnGracefulShutdown() {
            nodeIsReady = true
            break
        }
        guard nodeIsReady else { return }
        let listener: HandoverListener
        do {
            try FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            listener = try HandoverListener(path: path)
        } catch {
            logger.error(
                "cannot open the upgrade control socket; this process cannot hand over to a successor",
                metadata: ["path": "\(path)", "error": "\(error)"])
            try? await gracefulShutdown()
            return
        }
        logger.debug("upgrade control socket listening", metadata: ["path": "\(path)"])
        let (connections, accepted) = AsyncStream.makeStream(of: HandoverChannel.self)
        let stop = StopFlag()
        // Accepting blocks (poll with a short timeout, to see `stop`): on a thread of its own.
        async let acceptLoop: Void = Self.accept(on: listener, until: stop, into: accepted, logger: logger)
        var successor: HandoverChannel?
        for await channel in connections.cancelOnGracefulShutdown() {
            if await offer(to: channel) {
                successor = channel
                break
            }
        }
        stop.set()
        await acceptLoop
        // After a hand-over the successor binds its own control socket at the path: leave that one.
        listener.close(removingFile: successor == nil)
        guard let successor else { return }
        if let shutdown = state.withLock({ $0.shutdown }) { await shutdown() }
        // Our turn comes once the node has drained and the component host has closed the components.
        try? await gracefulShutdown()
        do {
            try await onOwnThread { try successor.send(.released) }
            logger.info("upgrade: components closed; the successor may open them")
        } catch {
            logger.warning("upgrade: cannot tell the successor that the components are closed", metadata: ["error": "\(error)"])
        }
        successor.close()
    }

    /// Accepts connections on the control socket until `stop` is set.
    private static func accept(
        on listener: HandoverListener, until stop: StopFlag, into accepted: AsyncStream<HandoverChannel>.Continuation,
        logger: Logger
    ) async {
        _ = try? await onOwnThread {
            while !stop.isSet {
                do {
                    if let channel = try listener.accept(timeout: .milliseconds(200)) { accepted.yield(channel) }
                } catch {
                    logger.warning("upgrade control socket: connection refused", metadata: ["error": "\(error)"])
                }
            }
            accepted.finish()
        }
    }

    /// One successor's conversation up to `takeover`; true when it took over.
    private func offer(to channel: HandoverChannel) async -> Bool {
        let (node, metrics) = state.withLock { ($0.sockets, $0.metrics) }
        let offered = node?()
        let metricsSocket = metrics.map { (HandoverSocket.tcp(role: "metrics", address: $0.address), $0.handoverDescriptor) }
        let sockets = ((offered ?? []) + (metricsSocket.map { [$0] } ?? [])).filter { $0.1 >= 0 }
        let drainTimeout = drainTimeout
        do {
            let peer = try channel.peerCredentials()
            let took: Bool = try await onOwnThread {
                let (hello, stray) = try channel.receive(timeout: .seconds(5))
                stray.forEach { close($0) }
                guard case .hello(_, let version) = hello else {
                    try? channel.send(.refused(reason: "expected hello"))
                    return false
                }
                guard offered != nil else {
                    try? channel.send(.refused(reason: "this hangard is shutting down"))
                    return false
                }
                guard version == HandoverMessage.protocolVersion else {
                    try? channel.send(.refused(reason: "protocol version \(version) is not \(HandoverMessage.protocolVersion)"))
                    return false
                }
                try channel.send(
                    .offer(pid: getpid(), drainTimeoutMilliseconds: drainTimeout.milliseconds))
                var batches = stride(from: 0, to: sockets.count, by: HandoverMessage.socketsPerPacket).map {
                    Array(sockets[$0..<min($0 + HandoverMessage.socketsPerPacket, sockets.count)])
                }
                if batches.isEmpty { batches = [[]] }
                for (index, batch) in batches.enumerated() {
                    try channel.send(
                        .sockets(batch.map(\.0), last: index == batches.count - 1), descriptors: batch.map(\.1))
                }
                let (answer, more) = try channel.receive(timeout: .seconds(30))
                more.forEach { close($0) }
                switch answer {
                case .takeover: return true
                case .refused(let reason): throw HandoverError.protocolError("the successor gave up: \(reason)")
                default: throw HandoverError.protocolError("unexpected \(answer)")
                }
            }
            guard took else { return false }
            handedOverFlag.store(true, ordering: .releasing)
            logger.notice(
                "upgrade: a successor took over the listeners; stopping accepting, draining calls in flight",
                metadata: [
                    "successor.pid": "\(peer.pid)", "sockets": "\(sockets.count)",
                    "drain.timeout": "\(drainTimeout)",
                ])
            return true
        } catch {
            logger.warning(
                "upgrade: hand-over abandoned; this process keeps serving", metadata: ["error": "\(error)"])
            channel.close()
            return false
        }
    }
}

/// Tells the accepting thread to stop.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .acquiring) }
    func set() { flag.store(true, ordering: .releasing) }
}

/// Runs blocking system calls on a thread of their own, off the cooperative pool and the event loops (the upgrade
/// conversation's waits are seconds long and happen once per upgrade).
func onOwnThread<Value: Sendable>(_ body: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = "hangard-upgrade"
        thread.start()
    }
}
