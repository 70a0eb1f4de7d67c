import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

extension DaprHTTPAPI {
    /// `/v1.0/invoke/{id}/method/{method...}` with any verb: the runtime's `InvocationAPI` calls the target over its
    /// app channel. The verb, the raw query string, the body and its content type go to the callee, and the
    /// caller's headers as Dapr forwards them; the callee's answer comes back with its content type and headers.
    static var invoke: [Route] {
        [Route(nil, "/v1.0/invoke/{id}/method/{method...}", name: "InvokeService", .call(invoke))]
    }

    /// Dapr's other form of invocation: any request that no route matches (by path or by method) but that carries a
    /// `dapr-app-id` header invokes that app, with the whole path (without its leading `/`) as the method.
    static let invokeByHeader = Route(nil, "/{method...}", name: "InvokeService", .call(invoke))

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
    private static let notRelayed: Set<String> = [
        "content-length", "content-type", "connection", "keep-alive", "transfer-encoding", "upgrade", "te",
        "trailer", "proxy-connection",
    ]

    private static func invoke(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let head = request.head
        let invocation = AppInvocation(
            method: request.parameters["method"],
            data: request.body, contentType: head.headers.first(name: "content-type") ?? "",
            verb: head.method.rawValue, query: request.target.query.map(String.init) ?? "")
        let headers = head.headers.map { (name: $0.name, value: $0.value) }
        return request.runtime.invocation.invoke(
            request.caller, target: request.parameters["id"], invocation, headers: headers, on: request.eventLoop
        ).map { result in
            var headers = HTTPHeaders()
            if !result.contentType.isEmpty { headers.add(name: "content-type", value: result.contentType) }
            for (name, value) in result.metadata
            where !notRelayed.contains(name) && !name.hasSuffix("-bin")
                && HTTPHeaderField.isValidName(name) && HTTPHeaderField.isValidValue(value)
            {
                headers.add(name: name, value: value)
            }
            return HTTPResponse(
                status: HTTPResponseStatus(statusCode: result.httpStatus ?? 200), headers: headers, body: result.data)
        }
    }
}
