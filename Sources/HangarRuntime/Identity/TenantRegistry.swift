import Foundation
import Synchronization

/// The apps this node serves, their tokens, and which of them have detached themselves with `Shutdown`.
public final class TenantRegistry: Sendable {
    private struct TokenEntry: Sendable {
        let token: [UInt8]
        let app: AppID
    }

    public let configuration: NodeConfiguration
    private let apps: [AppID: AppSpec]
    private let tenants: [String: TenantSpec]
    private let tokens: [TokenEntry]
    private let detachedApps = Mutex<Set<AppID>>([])

    public init(configuration: NodeConfiguration) {
        self.configuration = configuration
        var apps: [AppID: AppSpec] = [:]
        var tokens: [TokenEntry] = []
        for (id, spec, _) in configuration.apps {
            apps[id] = spec
            if let token = spec.apiToken { tokens.append(TokenEntry(token: Array(token.utf8), app: id)) }
        }
        self.apps = apps
        self.tokens = tokens
        self.tenants = Dictionary(uniqueKeysWithValues: configuration.tenants.map { ($0.namespace, $0) })
    }

    public var appIDs: [AppID] { configuration.apps.map(\.id) }

    public func app(_ id: AppID) -> AppSpec? { apps[id] }

    public func tenant(_ namespace: String) -> TenantSpec? { tenants[namespace] }

    /// The app a TCP request acts as: the one whose token matches (compared in constant time against every
    /// configured token, so timing says nothing about which matched), else the tokenless default if there is one.
    public func caller(forToken token: String?) -> Caller? {
        if let token, !token.isEmpty {
            let given = Array(token.utf8)
            var match: AppID?
            for entry in tokens where Self.constantTimeEquals(entry.token, given) { match = entry.app }
            if let match { return Caller(app: match, transport: .tcp) }
            return nil
        }
        return configuration.tokenlessTCPApp.map { Caller(app: $0, transport: .tcp) }
    }

    /// Marks an app detached (after it called `Shutdown`); returns false if it already was.
    @discardableResult
    public func detach(_ app: AppID) -> Bool { detachedApps.withLock { $0.insert(app).inserted } }

    public func isDetached(_ app: AppID) -> Bool { detachedApps.withLock { $0.contains(app) } }

    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count)
        let count = max(a.count, b.count)
        for index in 0..<count {
            let x = index < a.count ? a[index] : 0
            let y = index < b.count ? b[index] : 0
            difference |= x ^ y
        }
        return difference == 0
    }
}
