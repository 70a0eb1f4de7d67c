public import HangarRuntime
public import Hummingbird
public import NIOCore

/// The request context of the HTTP front-end: Hummingbird's core context plus the identity of the listener the
/// request came in on.
public struct HangarRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// Set by `ListenerResponder` before routing.
    public var listener: ListenerIdentity = .tcp
    /// The connection, whose event loop runs the building blocks' futures.
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }
}

/// Routes a request with the shared router after stamping the listener's identity on its context.
struct ListenerResponder<Inner: HTTPResponder>: HTTPResponder where Inner.Context == HangarRequestContext {
    let listener: ListenerIdentity
    let inner: Inner

    func respond(to request: Request, context: HangarRequestContext) async throws -> Response {
        var context = context
        context.listener = listener
        return try await inner.respond(to: request, context: context)
    }
}
