package import HangarTransport
package import Logging
package import NIOCore

/// The gatekeeper of every connection on an app's socket. When the connection becomes active it checks the peer's
/// credentials against the app's *current* `uids`/`gids` (so a reconfiguration applies to new connections), then
/// counts the connection towards the app's `maxConnections`. A peer that is not allowed is closed and logged. A
/// connection over `maxConnections` is kept (its requests are refused with a quota error, which says more than a
/// reset) but is logged.
package struct AppConnectionGatekeeper: ConnectionGatekeeper {
    let app: AppID
    let registry: TenantRegistry
    let logger: Logger

    package init(app: AppID, registry: TenantRegistry, logger: Logger) {
        self.app = app
        self.registry = registry
        self.logger = logger
    }

    /// What the front-ends' listeners put in front of each identity: an app's socket gets its gatekeeper; TCP
    /// connections are identified call by call (`dapr-api-token`), by the gate.
    package static func forListeners(registry: TenantRegistry, logger: Logger)
        -> @Sendable (ListenerIdentity) -> (any ConnectionGatekeeper)?
    {
        { identity in
            guard case .app(let app) = identity else { return nil }
            return AppConnectionGatekeeper(app: app, registry: registry, logger: logger)
        }
    }

    package func admit(_ channel: any Channel) -> EventLoopFuture<Bool> {
        guard let spec = registry.app(app), let account = registry.account(app) else {
            logger.notice(
                "connection refused: the app is no longer served",
                metadata: ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)"])
            return channel.eventLoop.makeSucceededFuture(false)
        }
        guard registry.buffers.admitConnection(for: registry.tenantAccount(app.namespace)?.buffers) else {
            // Debug only: a tenant reconnecting in a loop would flood the log; the refusals are counted in the
            // metrics, and the overload's start and end are logged (`OverloadMonitor`).
            logger.debug(
                "connection refused: the node is overloaded and the tenant holds a quarter of its buffered bytes",
                metadata: ["tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)"])
            return channel.eventLoop.makeSucceededFuture(false)
        }
        if spec.uids.isEmpty && spec.gids.isEmpty {
            return channel.eventLoop.makeSucceededFuture(accept(channel, account))
        }
        return PeerCredentials.of(channel).hop(to: channel.eventLoop).map { peer in
            guard Self.allows(peer, spec) else {
                logger.warning(
                    "connection refused: peer credentials not allowed for this app",
                    metadata: [
                        "tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)",
                        "peer.pid": "\(peer.pid)", "peer.uid": "\(peer.uid)", "peer.gid": "\(peer.gid)",
                    ])
                return false
            }
            return accept(channel, account)
        }.recover { error in
            logger.warning(
                "connection refused: peer credentials unavailable",
                metadata: ["app.id": "\(app)", "error": "\(error)"])
            return false
        }
    }

    private func accept(_ channel: any Channel, _ account: AppAccount) -> Bool {
        if !account.track(channel) {
            logger.warning(
                "connection over the app's maxConnections quota: its calls will be refused",
                metadata: [
                    "tenant.namespace": "\(app.namespace)", "app.id": "\(app.appId)",
                    "quota.limit": "\(account.maxConnections ?? 0)",
                ])
        }
        return true
    }

    static func allows(_ peer: PeerCredentials, _ spec: AppSpec) -> Bool {
        (spec.uids.isEmpty || spec.uids.contains(peer.uid)) && (spec.gids.isEmpty || spec.gids.contains(peer.gid))
    }
}
