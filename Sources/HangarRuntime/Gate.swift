/// Admission, between the front-ends and the building blocks: who is calling and whether the call may proceed.
/// Quotas and fair queuing hang off this type (a later issue); today it checks identity, detachment and size.
public struct Gate: Sendable {
    public let registry: TenantRegistry
    /// The largest request message or body accepted, in bytes.
    public let maxRequestBytes: Int

    public init(registry: TenantRegistry, maxRequestBytes: Int) {
        self.registry = registry
        self.maxRequestBytes = maxRequestBytes
    }

    /// The caller of a request and whether it may proceed: the one entry point both front-ends use. On an app's
    /// socket the connection is the app; on TCP the `dapr-api-token` says which app it is.
    public func admit(_ listener: ListenerIdentity, token: String?) throws(APIError) -> Caller {
        let caller: Caller
        switch listener {
        case .app(let app):
            caller = Caller(app: app, transport: .unixSocket)
        case .tcp:
            guard let tokenCaller = registry.caller(forToken: token) else { throw RequestError.unauthenticated() }
            caller = tokenCaller
        }
        if registry.isDetached(caller.app) { throw RequestError.detached(caller.app) }
        return caller
    }

    /// Refuses a request body over the limit.
    public func checkSize(_ size: Int) throws(APIError) {
        if size > maxRequestBytes { throw RequestError.tooLarge(size, limit: maxRequestBytes) }
    }
}
