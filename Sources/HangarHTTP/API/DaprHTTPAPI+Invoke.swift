import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

extension DaprHTTPAPI {
    /// `/v1.0/invoke/{id}/method/{method...}` with any verb: the runtime's `InvocationAPI` calls the target over its
    /// app channel. The verb, the raw query string, the body and its content type go to the callee, and the
    /// caller's headers as Dapr forwards them; the callee's answer comes back with its status, content type and
    /// headers. The route is streamed: an HTTP app gets the body as it arrives and its answer goes back as it comes
    /// (with its `content-length`, else chunked); a gRPC app gets and gives whole messages.
    static var invoke: [Route] {
        [Route(nil, "/v1.0/invoke/{id}/method/{method...}", name: "InvokeService", .stream(invoke))]
    }

    /// Dapr's other form of invocation: any request that no route matches (by path or by method) but that carries a
    /// `dapr-app-id` header invokes that app, with the whole path (without its leading `/`) as the method.
    static let invokeByHeader = Route(nil, "/{method...}", name: "InvokeService", .stream(invoke))

    /// The match of `invokeByHeader` for a request that no route matched, when it names its target in a
    /// `dapr-app-id` header or, without one, in Basic credentials whose user is `dapr-app-id` (any case) and whose
    /// password is the target: `Authorization: Basic base64("dapr-app-id:<target>")`, for clients that can set
    /// credentials but no header. As in Dapr, that Authorization header reaches the callee unchanged.
    static func invokeByHeader(_ head: HTTPRequestHead, path: Substring) -> HTTPRouter<DaprHTTPHandler>.Match? {
        let target: String
        if let header = head.headers.first(name: "dapr-app-id"), !header.isEmpty {
            target = header
        } else if let credentials = head.headers.first(name: "authorization"), let named = basicTarget(credentials) {
            target = named
        } else {
            return nil
        }
        var values = HTTPRouteParameters.Values()
        values.append(target[...])
        values.append(path.drop { $0 == "/" })
        return .init(route: invokeByHeader, parameters: HTTPRouteParameters(names: ["id", "method"], values: values))
    }

    /// The target named by `Basic base64("dapr-app-id:<target>")`, as Dapr reads it: exactly one `:`, the user
    /// `dapr-app-id` in any case; nil for any other credentials.
    static func basicTarget(_ authorization: String) -> String? {
        guard authorization.hasPrefix("Basic "),
            let decoded = Data(base64Encoded: String(authorization.dropFirst("Basic ".count))),
            let text = String(data: decoded, encoding: .utf8)
        else { return nil }
        let pair = text.split(separator: ":", omittingEmptySubsequences: false)
        guard pair.count == 2, pair[0].lowercased() == "dapr-app-id", !pair[1].isEmpty else { return nil }
        return String(pair[1])
    }

    /// Response headers the front-end sets itself or that must not cross a hop.
    static let notRelayed: Set<String> = [
        "content-length", "content-type", "connection", "keep-alive", "transfer-encoding", "upgrade", "te",
        "trailer", "proxy-connection",
    ]

    private static func invoke(_ stream: DaprHTTPStream) {
        let head = stream.head
        let invocation = AppInvocation(
            method: stream.parameters["method"], data: ByteBuffer(),
            contentType: head.headers.first(name: "content-type") ?? "", verb: head.method.rawValue,
            query: stream.target.query.map(String.init) ?? "")
        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        stream.runtime.invocation.invokeStreamed(
            stream.caller, target: stream.parameters["id"], invocation, headers: headers,
            stream: DaprHTTPInvocationStream(stream: stream), on: stream.eventLoop
        ).whenComplete { result in
            stream.finish(result)
        }
    }
}

/// An HTTP caller's request and response as the runtime's streamed invocation sees them (`AppInvocationStream`),
/// on its `HTTPExchange`.
struct DaprHTTPInvocationStream: AppInvocationStream {
    let stream: DaprHTTPStream

    var requestLength: Int? { stream.exchange.hasBody ? stream.exchange.declaredLength : 0 }

    func nextRequestPart() -> EventLoopFuture<ByteBuffer?> {
        stream.exchange.nextBodyPart().flatMapErrorThrowing { throw reason($0) }
    }

    func responseHead(_ head: AppResponseHead) {
        var headers = HTTPHeaders()
        if !head.contentType.isEmpty { headers.add(name: "content-type", value: head.contentType) }
        for (name, value) in head.metadata
        where !DaprHTTPAPI.notRelayed.contains(name) && !name.hasSuffix("-bin")
            && HTTPHeaderField.isValidName(name) && HTTPHeaderField.isValidValue(value)
        {
            headers.add(name: name, value: value)
        }
        if let length = head.length { headers.add(name: "content-length", value: String(length)) }
        stream.exchange.writeHead(status: HTTPResponseStatus(statusCode: head.status), headers: headers)
    }

    func responsePart(_ part: ByteBuffer) -> EventLoopFuture<Void> {
        stream.exchange.writeBodyPart(part).flatMapErrorThrowing { throw reason($0) }
    }

    func whenCancelled(_ cancel: @escaping @Sendable () -> Void) {
        stream.exchange.whenCancelled { _ in cancel() }
    }

    /// Why the caller's side ended early, in the runtime's terms: the request over `maxRequestBytes` (already
    /// counted as a refusal when it was answered), or the caller gone.
    private func reason(_ error: any Error) -> any Error {
        guard case HTTPExchange.Cancellation.tooLarge = error else { return AppChannelError.cancelled }
        return QuotaError.tooLarge(nil, limit: stream.exchange.limit, app: stream.caller.app)
    }
}
