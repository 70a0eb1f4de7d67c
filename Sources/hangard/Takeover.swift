import ArgumentParser
import Foundation
import HangarSystemd
import HangarTransport
import Logging
import HangarSync

/// The successor's side of an upgrade: a new hangard that finds a running one's control socket under its
/// `--socket-root` (`UpgradeControl`) takes its listening sockets over instead of binding its own, so that no
/// socket file is ever missing and no connection is refused.
///
/// Order (see `HandoverMessage` for the conversation):
/// 1. The new process has loaded and validated its configuration; an invalid one exits before it connects, and the
///    running one never hears of it.
/// 2. `connect` receives every listener; the TCP ones become `inheritedListeners` (as with socket activation), the
///    Unix ones are taken by the node app by app (`unixSocket`).
/// 3. The node sends `takeOver`: the predecessor stops accepting and drains. Connections made from then on wait in
///    the sockets' backlog (no process accepts), they are not refused.
/// 4. `released`: the predecessor has closed its components. Only then does the node open its own — the SQLite
///    files have one writer at a time, and each store keeps its byte counts in memory — and then it accepts.
///    A client therefore sees one stall: the predecessor's drain plus the components' close and open.
/// 5. Sockets the new configuration no longer needs are closed (`closeUnused`), their files removed; sockets it
///    needs but did not get (new apps) the node binds itself.
final class Takeover: Sendable {
    /// `--take-over`.
    enum Mode: String, ExpressibleByArgument, CaseIterable, Sendable {
        /// Take over when a hangard answers on the control socket, otherwise start on fresh sockets.
        case auto
        /// Never: bind fresh sockets (replacing a running hangard's socket files, as before upgrades existed).
        case never
        /// Take over or exit: for upgrade scripts, which must not start a second, independent daemon.
        case required
    }

    let predecessor: Int32
    /// The predecessor's `--drain-timeout`: how long `released` may take, plus its components' close.
    let predecessorDrainTimeout: Duration
    let socketCount: Int
    private let channel: Locked<HandoverChannel?>
    private let sockets: Locked<[HandoverSocket: CInt]>
    private let logger: Logger

    private init(
        channel: HandoverChannel, predecessor: Int32, drainTimeout: Duration, sockets: [HandoverSocket: CInt],
        logger: Logger
    ) {
        self.channel = Locked(channel)
        self.predecessor = predecessor
        self.predecessorDrainTimeout = drainTimeout
        self.socketCount = sockets.count
        self.sockets = Locked(sockets)
        self.logger = logger
    }

    /// Connects to the running hangard's control socket under `socketRoot` and receives its listeners; nil when no
    /// hangard answers there.
    static func connect(socketRoot: String, logger: Logger) async throws -> Takeover? {
        let path = "\(socketRoot)/\(UpgradeControl.fileName)"
        let received: (HandoverChannel, Int32, Duration, [HandoverSocket: CInt])? = try await onOwnThread {
            guard let channel = try HandoverChannel.connect(path: path) else { return nil }
            let peer = try channel.peerCredentials()
            guard peer.uid == getuid() else { throw HandoverError.foreignPeer(peer) }
            try channel.send(.hello(pid: getpid(), protocolVersion: HandoverMessage.protocolVersion))
            let (offer, stray) = try channel.receive(timeout: .seconds(10))
            stray.forEach { close($0) }
            let predecessor: Int32
            let drainTimeout: Duration
            switch offer {
            case .offer(let pid, let milliseconds):
                predecessor = pid
                drainTimeout = .milliseconds(milliseconds)
            case .refused(let reason):
                throw HandoverError.protocolError("the running hangard refused: \(reason)")
            default:
                throw HandoverError.protocolError("expected an offer, got \(offer)")
            }
            var sockets: [HandoverSocket: CInt] = [:]
            do {
                while true {
                    let (message, descriptors) = try channel.receive(timeout: .seconds(10))
                    guard case .sockets(let described, let last) = message, described.count == descriptors.count
                    else {
                        descriptors.forEach { close($0) }
                        throw HandoverError.protocolError("expected sockets with one descriptor each, got \(message)")
                    }
                    for (socket, descriptor) in zip(described, descriptors) {
                        if let duplicate = sockets.updateValue(descriptor, forKey: socket) { close(duplicate) }
                    }
                    if last { break }
                }
            } catch {
                sockets.values.forEach { close($0) }
                throw error
            }
            return (channel, predecessor, drainTimeout, sockets)
        }
        guard let received else { return nil }
        let (channel, predecessor, drainTimeout, sockets) = received
        logger.notice(
            "upgrade: taking over from the running hangard",
            metadata: ["predecessor.pid": "\(predecessor)", "sockets": "\(sockets.count)"])
        return Takeover(
            channel: channel, predecessor: predecessor, drainTimeout: drainTimeout, sockets: sockets, logger: logger)
    }

    /// The handed-over Unix socket at `path`, now the caller's; nil when none came.
    func unixSocket(_ path: String) -> CInt? {
        sockets.withLock { $0.removeValue(forKey: .unix(path: path)) }
    }

    /// Whether a Unix socket at `path` was handed over and not taken yet (its file must not be removed).
    func hasUnixSocket(_ path: String) -> Bool {
        sockets.withLock { $0[.unix(path: path)] != nil }
    }

    /// The handed-over TCP listeners this process wants, as socket activation's: the one of each role whose port is
    /// the flag's (any port when the flag's is 0). Others stay for `closeUnused`, and the node binds the flag's
    /// address itself.
    func inheritedListeners(http: ListenAddress?, grpc: ListenAddress?, metrics: ListenAddress?)
        -> InheritedListeners
    {
        var result = InheritedListeners()
        let wanted: [(InheritedListeners.Role, ListenAddress?)] = [(.http, http), (.grpc, grpc), (.metrics, metrics)]
        sockets.withLock { sockets in
            for (socket, descriptor) in sockets {
                guard case .tcp(let roleName, _) = socket, let role = InheritedListeners.Role(rawValue: roleName),
                    let flag = wanted.first(where: { $0.0 == role })?.1
                else { continue }
                let (port, address) = Systemd.localAddress(descriptor)
                guard let port, flag.port == 0 || flag.port == port else { continue }
                sockets.removeValue(forKey: socket)
                result[role] = Systemd.InheritedSocket(descriptor: descriptor, name: roleName, port: port, address: address)
            }
        }
        return result
    }

    /// Tells the predecessor to stop accepting and drain: from here on this process serves the sockets.
    func takeOver() async throws {
        guard let channel = channel.withLock({ $0 }) else { return }
        try await onOwnThread { try channel.send(.takeover) }
        logger.info(
            "upgrade: predecessor told to stop accepting; waiting for it to drain and close its components",
            metadata: ["predecessor.pid": "\(predecessor)", "predecessor.drain.timeout": "\(predecessorDrainTimeout)"])
    }

    /// Waits until the predecessor has closed its components (or is gone). A predecessor that takes longer than its
    /// drain timeout plus 30 s is logged and no longer waited for.
    func released() async {
        guard let channel = channel.withLock({ $0 }) else { return }
        let bound = predecessorDrainTimeout + .seconds(30)
        do {
            let (message, stray) = try await onOwnThread { try channel.receive(timeout: bound) }
            stray.forEach { close($0) }
            if message != .released {
                logger.warning("upgrade: unexpected message from the predecessor", metadata: ["message": "\(message)"])
            }
        } catch HandoverError.closed {
            logger.info("upgrade: the predecessor has exited", metadata: ["predecessor.pid": "\(predecessor)"])
        } catch {
            logger.error(
                "upgrade: the predecessor did not report its components closed; opening them anyway",
                metadata: ["predecessor.pid": "\(predecessor)", "error": "\(error)", "waited": "\(bound)"])
        }
        self.channel.withLock { $0 = nil }
        channel.close()
    }

    /// Closes the sockets nobody took; the files of Unix sockets among them (apps no longer configured) are
    /// removed, as the predecessor would have on their removal. Returns their descriptions, for the log.
    @discardableResult
    func closeUnused(removeFile: (String) -> Void) -> [HandoverSocket] {
        let left = sockets.withLock { sockets in
            defer { sockets.removeAll() }
            return sockets
        }
        for (socket, descriptor) in left {
            close(descriptor)
            if case .unix(let path) = socket { removeFile(path) }
        }
        return Array(left.keys)
    }

    /// Gives up before `takeOver` (start-up failed): the predecessor keeps serving.
    func abandon(_ reason: String) {
        if let channel = channel.withLock({ $0 }) {
            try? channel.send(.refused(reason: reason))
            channel.close()
        }
        channel.withLock { $0 = nil }
        closeUnused { _ in }
    }
}
