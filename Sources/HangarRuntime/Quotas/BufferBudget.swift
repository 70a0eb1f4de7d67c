package import Logging
import NIOCore
package import Synchronization
import HangarSync

/// The node's budget of buffered request bytes — what the daemon holds because a client sent it and has not
/// finished, or because a call waits for its answer — and each tenant's share of it (`maxBufferedBytes`). One
/// daemon serves every tenant, so what one tenant sends must not be able to grow it until the node's memory limit
/// kills it for all of them.
///
/// Bytes are counted from the first byte held beyond the read that brought it (a request that arrives whole and is
/// answered in the same read holds nothing and costs nothing): a partial gRPC message or HTTP body, a complete
/// request waiting for its end or for an answer that comes later, a streaming call's undelivered messages. Past a
/// tenant's share, its calls that would buffer more are refused (`RESOURCE_EXHAUSTED` / 429); past the node's
/// budget, every tenant's are, and the connection holding the most is closed (`shedHeaviest`).
///
/// Overload, as Envoy's overload manager grades it (`level`): `pressure` from 90 % of the budget, `critical` once a
/// reservation has met the limit (a connection is shed), back to `normal` under 90 %. Visible in the metrics and
/// `/healthz/detail`, and logged as it changes. While the node is not `normal`, the tenants that hold the bytes —
/// a quarter of their share or more — get no new connection (`admitConnection(for:)`), so that what they hold can
/// drain; the others connect as usual. Envoy stops accepting for everyone, which on a node shared by tenants would
/// let the ones holding the bytes lock every other tenant's apps out.
package final class BufferBudget: Sendable {
    /// The overload levels, in the order their actions start.
    package enum Level: Int, Sendable, CustomStringConvertible {
        case normal = 0
        /// Over 90 % of the budget: tenants holding a quarter of their share or more get no new connection.
        case pressure = 1
        /// A reservation met the budget: calls that would buffer more are refused, the heaviest connection shed.
        case critical = 2

        package var description: String {
            switch self {
            case .normal: "normal"
            case .pressure: "pressure"
            case .critical: "critical"
            }
        }
    }

    /// What holds buffered bytes and can give them back by closing: one per connection of the API listeners.
    package final class Holder: Sendable {
        /// Bytes this connection holds now, kept by its owner on its event loop, read by the shedder.
        package let held = Atomic<Int>(0)
        let close: @Sendable () -> Void

        package init(close: @escaping @Sendable () -> Void) {
            self.close = close
        }
    }

    package let limit: Int
    /// Where the overload's changes are told: the budget crossing 90 % either way, the budget met, a shed.
    private let logger: Logger
    private let used = Atomic<Int>(0)
    private let criticalFlag = Atomic<Bool>(false)
    private let sheds = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let holders = Locked<[ObjectIdentifier: Holder]>([:])
    /// When the last connection was shed (uptime nanoseconds): at most one per `shedInterval`, so that one burst
    /// does not close every connection before the first one's bytes are freed.
    private let lastShed = Atomic<UInt64>(0)
    private static let shedInterval: UInt64 = 50_000_000

    /// The default budget: half the cgroup memory limit when there is one, else 256 MiB.
    package init(limit: Int = BufferBudget.defaultLimit(), logger: Logger = Logger(label: "hangard.overload")) {
        self.limit = limit
        self.logger = logger
    }

    /// When the overload was last logged (uptime nanoseconds): at most one line a second, however fast tenants make
    /// the node cross 90 % or connections are shed (the metrics count every event).
    private let lastLogged = Atomic<UInt64>(0)

    private func mayLog() -> Bool {
        let now = NIODeadline.now().uptimeNanoseconds
        let last = lastLogged.load(ordering: .relaxed)
        return now &- last >= 1_000_000_000
            && lastLogged.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
    }

    /// Whether `bytes` are at 90 % of the budget or more.
    private func underPressure(_ bytes: Int) -> Bool { bytes * 10 >= limit * 9 }

    package var usedBytes: Int { used.load(ordering: .relaxed) }
    /// Connections closed to bring the node back under its budget.
    package var shedCount: Int { sheds.load(ordering: .relaxed) }

    package var level: Level {
        let bytes = usedBytes
        if criticalFlag.load(ordering: .relaxed) {
            if !underPressure(bytes) { criticalFlag.store(false, ordering: .relaxed) } else { return .critical }
        }
        return underPressure(bytes) ? .pressure : .normal
    }

    /// Whether a new connection of the tenant holding `account` is accepted now: not while the node is under
    /// pressure and the tenant holds a quarter of its share (or of the node's budget, if less) or more (counted in
    /// `refusedConnections`). A connection whose tenant is not known yet (TCP, identified call by call) is accepted:
    /// its calls meet their tenant's share when they buffer.
    package func admitConnection(for account: BufferAccount?) -> Bool {
        guard let account, level != .normal else { return true }
        guard account.usedBytes * 4 >= min(account.limit, limit) else { return true }
        refused.wrappingAdd(1, ordering: .relaxed)
        return false
    }

    /// Connections refused at accept because of overload.
    package var refusedConnections: Int { refused.load(ordering: .relaxed) }

    /// Takes `bytes` from the node's budget; false (nothing taken) when that would pass it.
    func reserve(_ bytes: Int) -> Bool {
        let total = used.wrappingAdd(bytes, ordering: .relaxed).newValue
        guard total <= limit else {
            used.wrappingSubtract(bytes, ordering: .relaxed)
            if !criticalFlag.exchange(true, ordering: .relaxed) && mayLog() {
                logger.warning(
                    """
                    overload critical: buffered request bytes met the node's budget (--max-buffered-bytes); calls \
                    that would buffer more are refused and the heaviest connections are closed
                    """,
                    metadata: ["overload.used": "\(total - bytes)", "overload.limit": "\(limit)"])
            }
            shedHeaviest()
            return false
        }
        if underPressure(total) && !underPressure(total - bytes) && mayLog() {
            logger.warning(
                """
                overload pressure: buffered request bytes passed 90 % of the node's budget; tenants holding a \
                quarter of their maxBufferedBytes get no new connection
                """,
                metadata: ["overload.used": "\(total)", "overload.limit": "\(limit)"])
        }
        return true
    }

    /// Counts `bytes` that are held already and cannot be refused (response bytes a client has not read); whether
    /// the node is now past its budget, in which case it is critical and the heaviest connection is shed.
    func charge(_ bytes: Int) -> Bool {
        let total = used.wrappingAdd(bytes, ordering: .relaxed).newValue
        guard total <= limit else {
            if !criticalFlag.exchange(true, ordering: .relaxed) && mayLog() {
                logger.warning(
                    "overload critical: bytes held for clients passed the node's budget (--max-buffered-bytes)",
                    metadata: ["overload.used": "\(total)", "overload.limit": "\(limit)"])
            }
            shedHeaviest()
            return true
        }
        if underPressure(total) && !underPressure(total - bytes) && mayLog() {
            logger.warning(
                "overload pressure: bytes held for clients passed 90 % of the node's budget",
                metadata: ["overload.used": "\(total)", "overload.limit": "\(limit)"])
        }
        return false
    }

    func release(_ bytes: Int) {
        let total = used.wrappingSubtract(bytes, ordering: .relaxed).newValue
        if !underPressure(total) && underPressure(total + bytes) && mayLog() {
            logger.notice(
                "overload over: buffered request bytes are back under 90 % of the node's budget",
                metadata: ["overload.used": "\(total)", "overload.limit": "\(limit)"])
        }
    }

    /// Registers a connection that may hold bytes; `remove` when it closes.
    package func register(_ holder: Holder) {
        _ = holders.withLock { $0.updateValue(holder, forKey: ObjectIdentifier(holder)) }
    }

    package func remove(_ holder: Holder) {
        _ = holders.withLock { $0.removeValue(forKey: ObjectIdentifier(holder)) }
    }

    /// Closes the connection that holds the most (at most one per 50 ms): its calls fail and its bytes are freed,
    /// while the connections that hold little go on.
    func shedHeaviest() {
        let now = NIODeadline.now().uptimeNanoseconds
        let last = lastShed.load(ordering: .relaxed)
        guard now &- last >= Self.shedInterval,
            lastShed.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        let heaviest = holders.withLock { holders in
            holders.values.max { $0.held.load(ordering: .relaxed) < $1.held.load(ordering: .relaxed) }
        }
        let held = heaviest?.held.load(ordering: .relaxed) ?? 0
        guard let heaviest, held > 0 else { return }
        let shed = sheds.wrappingAdd(1, ordering: .relaxed).newValue
        if mayLog() {
            logger.warning(
                "overload: closing the connection that holds the most buffered request bytes",
                metadata: [
                    "connection.bufferedBytes": "\(held)", "overload.limit": "\(limit)",
                    "overload.shedTotal": "\(shed)",
                ])
        }
        heaviest.close()
    }

    /// Half the memory limit of this process's cgroup (v2 `memory.max`, v1 `memory.limit_in_bytes`) when it has
    /// one, else 256 MiB.
    package static func defaultLimit(cgroupRoot: String = "/sys/fs/cgroup") -> Int {
        if let limit = cgroupMemoryLimit(root: cgroupRoot) { return max(limit / 2, 16 << 20) }
        return 256 << 20
    }

    static func cgroupMemoryLimit(root: String) -> Int? {
        // v2: the process's own cgroup from /proc/self/cgroup ("0::/path"), else the root's file.
        var candidates: [String] = []
        if let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("0::") {
                candidates.append(root + line.dropFirst(3) + "/memory.max")
            }
        }
        candidates += [root + "/memory.max", root + "/memory/memory.limit_in_bytes"]
        for path in candidates {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { continue }
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            // "max" (v2) or a huge number (v1's "unlimited") mean no limit.
            if let bytes = Int(value), bytes > 0, bytes < (1 << 50) { return bytes }
            return nil
        }
        return nil
    }
}

/// One tenant's buffered bytes, against its `maxBufferedBytes` and the node's `BufferBudget`.
package final class BufferAccount: Sendable {
    /// Why a reservation was refused.
    package enum Refusal: Sendable, Equatable {
        case tenant(limit: Int)
        case node(limit: Int)
    }

    package let namespace: String
    let node: BufferBudget
    private let limitBytes: Atomic<Int>
    private let used = Atomic<Int>(0)

    init(namespace: String, limit: Int, node: BufferBudget) {
        self.namespace = namespace
        self.node = node
        self.limitBytes = Atomic(limit)
    }

    package var limit: Int { limitBytes.load(ordering: .relaxed) }
    package var usedBytes: Int { used.load(ordering: .relaxed) }

    func setLimit(_ limit: Int) { limitBytes.store(limit, ordering: .relaxed) }

    /// Takes `bytes` from the tenant's share and the node's budget, both or neither; the refusal when either would
    /// pass its limit.
    package func reserve(_ bytes: Int) -> Refusal? {
        guard bytes > 0 else { return nil }
        let total = used.wrappingAdd(bytes, ordering: .relaxed).newValue
        let limit = self.limit
        guard total <= limit else {
            used.wrappingSubtract(bytes, ordering: .relaxed)
            return .tenant(limit: limit)
        }
        guard node.reserve(bytes) else {
            used.wrappingSubtract(bytes, ordering: .relaxed)
            return .node(limit: node.limit)
        }
        return nil
    }

    /// Counts `bytes` the tenant holds already, whether or not they fit (response bytes its client has not read);
    /// the limit they passed, if any (`release` them as for `reserve`).
    package func charge(_ bytes: Int) -> Refusal? {
        guard bytes > 0 else { return nil }
        let total = used.wrappingAdd(bytes, ordering: .relaxed).newValue
        let overNode = node.charge(bytes)
        let limit = self.limit
        if total > limit { return .tenant(limit: limit) }
        return overNode ? .node(limit: node.limit) : nil
    }

    package func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        used.wrappingSubtract(bytes, ordering: .relaxed)
        node.release(bytes)
    }

    /// The refusal as an API error: `RESOURCE_EXHAUSTED` / 429, naming the limit that was met.
    package func error(_ refusal: Refusal, app: AppID) -> APIError {
        switch refusal {
        case .tenant(let limit):
            return QuotaError.exceeded(
                QuotaRefusal(quota: "maxBufferedBytes", limit: limit, scope: .tenant), app: app)
        case .node(let limit):
            return APIError(
                errorCode: QuotaError.errorCode, rpcCode: .resourceExhausted, httpStatus: 503,
                message: "the node is overloaded: requests already buffer \(limit) bytes, its budget "
                    + "(--max-buffered-bytes); retry shortly",
                reason: "HANGAR_NODE_OVERLOADED",
                metadata: ["limit": String(limit), "namespace": app.namespace, "appId": app.appId])
        }
    }
}

/// Bytes a connection already holds for its client — responses it has not read — kept counted in one tenant's
/// `BufferAccount` at what is held now. They exist already, so they are charged, never refused; `settle` says when
/// they took the tenant past its share (the connection is then closed, which frees them).
package struct HeldBytes {
    /// What is counted now.
    package private(set) var charged = 0
    private var account: BufferAccount?

    package init() {}

    /// Brings the count to `bytes`: more is charged to the account counted so far, else to `account()` (nil: not
    /// counted); less is given back. The refusal when the tenant is now past its share.
    package mutating func settle(_ bytes: Int, account: () -> BufferAccount?) -> BufferAccount.Refusal? {
        let delta = bytes - charged
        guard delta != 0 else { return nil }
        if delta < 0 {
            self.account?.release(-delta)
            charged = bytes
            if bytes == 0 { self.account = nil }
            return nil
        }
        guard let target = self.account ?? account() else { return nil }
        self.account = target
        charged = bytes
        guard case .tenant(let limit) = target.charge(delta) else { return nil }
        return .tenant(limit: limit)
    }

    /// Gives everything back (the connection closed).
    package mutating func release() { _ = settle(0, account: { nil }) }

    /// The tenant the bytes are counted against, while any are.
    package var namespace: String? { account?.namespace }
}
