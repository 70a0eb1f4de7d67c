import Foundation
import NIOCore
import HangarSync

/// The apps this node serves, their tokens and their quota accounts. Reconfigured live (`apply`): a snapshot of
/// the configuration is swapped atomically, while each tenant's and app's account lives on across changes so
/// that quotas in use carry over.
public final class TenantRegistry: Sendable {
    private struct TokenEntry: Sendable {
        let token: [UInt8]
        let app: AppID
    }

    private final class Snapshot: Sendable {
        let configuration: NodeConfiguration
        let specs: [AppID: AppSpec]
        let tenants: [String: TenantSpec]
        let accounts: [AppID: AppAccount]
        let tenantAccounts: [String: TenantAccount]
        let tokens: [TokenEntry]
        let access: AccessControlPolicies

        init(
            configuration: NodeConfiguration, accounts: [AppID: AppAccount], tenantAccounts: [String: TenantAccount],
            previousAccess: AccessControlPolicies?
        ) {
            self.configuration = configuration
            self.access = AccessControlPolicies(configuration, previous: previousAccess)
            var specs: [AppID: AppSpec] = [:]
            var tokens: [TokenEntry] = []
            for (id, spec, _) in configuration.apps {
                specs[id] = spec
                if let token = spec.apiToken { tokens.append(TokenEntry(token: Array(token.utf8), app: id)) }
            }
            self.specs = specs
            self.tokens = tokens
            self.tenants = Dictionary(uniqueKeysWithValues: configuration.tenants.map { ($0.namespace, $0) })
            self.accounts = accounts
            self.tenantAccounts = tenantAccounts
        }
    }

    /// What a reconfiguration changed for the apps, so that the node can bind and close sockets.
    package struct Change: Sendable {
        package var added: [AppID] = []
        package var removed: [AppID] = []
        /// Apps whose socket-level settings (uids, gids) changed.
        package var changed: [AppID] = []
        /// Tenants or apps whose quotas, weight or token changed.
        package var reconfigured: [AppID] = []

        package var isEmpty: Bool { added.isEmpty && removed.isEmpty && changed.isEmpty && reconfigured.isEmpty }
    }

    /// The largest request any app may send (`--max-request-bytes`); a tenant's quota can only lower it.
    package let nodeMaxRequestBytes: Int
    /// The node's budget of buffered request bytes (`--max-buffered-bytes`), shared by the tenants' accounts.
    package let buffers: BufferBudget
    private let current: Locked<Snapshot>

    public convenience init(configuration: NodeConfiguration, maxRequestBytes: Int = 4 << 20) {
        self.init(configuration: configuration, maxRequestBytes: maxRequestBytes, buffers: BufferBudget())
    }

    package init(configuration: NodeConfiguration, maxRequestBytes: Int, buffers: BufferBudget) {
        self.buffers = buffers
        self.nodeMaxRequestBytes = maxRequestBytes
        current = Locked(
            Snapshot(configuration: configuration, accounts: [:], tenantAccounts: [:], previousAccess: nil))
        apply(configuration)
    }

    /// Switches to a new configuration. Accounts of apps that stay keep their counters; removed apps' accounts
    /// are marked removed, so calls on their remaining connections are refused.
    @discardableResult
    package func apply(_ configuration: NodeConfiguration) -> Change {
        let now = NIODeadline.now().uptimeNanoseconds
        return current.withLock { snapshot in
            var change = Change()
            var tenantAccounts: [String: TenantAccount] = [:]
            var accounts: [AppID: AppAccount] = [:]
            for tenant in configuration.tenants {
                let quotas = tenant.quotas.merged(over: Quotas.defaults)
                let tenantAccount: TenantAccount
                if let existing = snapshot.tenantAccounts[tenant.namespace] {
                    existing.update(tenant, effective: quotas, now: now)
                    tenantAccount = existing
                } else {
                    tenantAccount = TenantAccount(tenant, effective: quotas, now: now, buffers: buffers)
                }
                tenantAccounts[tenant.namespace] = tenantAccount
                let previousTenant = snapshot.tenants[tenant.namespace]
                for app in tenant.apps {
                    let id = AppID(namespace: tenant.namespace, appId: app.appId)
                    let own = app.quotas ?? Quotas()
                    let effective = own.merged(over: quotas)
                    if let existing = snapshot.accounts[id], existing.tenant === tenantAccount,
                        existing.status != .removed, let previous = snapshot.specs[id]
                    {
                        existing.update(
                            own: own, effective: effective, nodeMaxRequestBytes: nodeMaxRequestBytes, now: now)
                        accounts[id] = existing
                        if previous.uids != app.uids || previous.gids != app.gids { change.changed.append(id) }
                        if previous != app || previousTenant?.quotas != tenant.quotas
                            || previousTenant?.weight != tenant.weight
                        {
                            change.reconfigured.append(id)
                        }
                    } else {
                        accounts[id] = AppAccount(
                            app: id, tenant: tenantAccount, own: own, effective: effective,
                            nodeMaxRequestBytes: nodeMaxRequestBytes, now: now)
                        change.added.append(id)
                    }
                }
            }
            for (id, account) in snapshot.accounts where accounts[id] == nil {
                _ = account.setStatus(.removed)
                change.removed.append(id)
            }
            snapshot = Snapshot(
                configuration: configuration, accounts: accounts, tenantAccounts: tenantAccounts,
                previousAccess: snapshot.access)
            change.added.sort { $0.description < $1.description }
            change.removed.sort { $0.description < $1.description }
            return change
        }
    }

    package var configuration: NodeConfiguration { current.withLock { $0.configuration } }

    package func app(_ id: AppID) -> AppSpec? { current.withLock { $0.specs[id] } }

    package func tenant(_ namespace: String) -> TenantSpec? { current.withLock { $0.tenants[namespace] } }

    /// What the invocation rules need to know about a call from `caller` into `callee`, found under one lock: the
    /// callee's tenant's grants to other namespaces, the access control guarding the callee, and the caller's trust
    /// domain. nil when `callee` is not a declared app.
    func invocationTarget(_ callee: AppID, caller: AppID) -> InvocationTarget? {
        current.withLock { snapshot in
            guard snapshot.specs[callee] != nil, let tenant = snapshot.tenants[callee.namespace] else { return nil }
            return InvocationTarget(
                grants: tenant.allowInvocationFrom, access: snapshot.access.byApp[callee] ?? .unrestricted,
                callerTrustDomain: snapshot.access.trustDomains[caller.namespace]
                    ?? AccessControlList.defaultTrustDomain)
        }
    }

    /// Which secrets `app` may read, from its Configuration's `spec.secrets` (everything without one).
    package func secretAccess(for app: AppID) -> AppSecretAccess {
        current.withLock { $0.access.secretsByApp[app] } ?? .unrestricted
    }

    /// Every Configuration resource and its state (for `/v1.0/healthz/detail`).
    package var configurationStatuses: [ConfigurationStatus] { current.withLock { $0.access.statuses } }

    /// The quota account of a served app.
    package func account(_ id: AppID) -> AppAccount? { current.withLock { $0.accounts[id] } }

    /// The quota account of a tenant.
    package func tenantAccount(_ namespace: String) -> TenantAccount? {
        current.withLock { $0.tenantAccounts[namespace] }
    }

    /// Every served app's account.
    package var accounts: [AppAccount] { current.withLock { Array($0.accounts.values) } }

    /// The app a TCP request acts as: the one whose token matches (compared in constant time against every
    /// configured token, so timing says nothing about which matched), else the tokenless default if there is one.
    package func caller(forToken token: String?) -> Caller? {
        let snapshot = current.withLock { $0 }
        if let token, !token.isEmpty {
            let given = Array(token.utf8)
            var match: AppID?
            for entry in snapshot.tokens where Self.constantTimeEquals(entry.token, given) { match = entry.app }
            if let match { return Caller(app: match, transport: .tcp) }
            return nil
        }
        return snapshot.configuration.tokenlessTCPApp.map { Caller(app: $0, transport: .tcp) }
    }

    /// Marks an app detached (after it called `Shutdown`); returns false if it already was (or is not served).
    @discardableResult
    package func detach(_ app: AppID) -> Bool { account(app)?.setStatus(.detached) ?? false }

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

/// What `TenantRegistry.invocationTarget` finds.
struct InvocationTarget {
    let grants: [InvocationGrant]
    let access: AppAccessControl
    let callerTrustDomain: String
}
