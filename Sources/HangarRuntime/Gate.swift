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

    /// The caller of a TCP request, from its `dapr-api-token`.
    public func identifyTCP(token: String?) throws(APIError) -> Caller {
        guard let caller = registry.caller(forToken: token) else { throw RequestError.unauthenticated() }
        return caller
    }

    /// Lets a call through, or says why not.
    public func admit(_ caller: Caller) throws(APIError) {
        if registry.isDetached(caller.app) { throw RequestError.detached(caller.app) }
    }

    /// Refuses a request body over the limit.
    public func checkSize(_ size: Int) throws(APIError) {
        if size > maxRequestBytes { throw RequestError.tooLarge(size, limit: maxRequestBytes) }
    }
}
