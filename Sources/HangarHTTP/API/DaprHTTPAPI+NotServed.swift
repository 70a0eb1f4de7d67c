import HangarRuntime
import NIOHTTP1

extension DaprHTTPAPI {
    /// The Dapr APIs this build does not serve, under each API version Dapr uses: 501 `ERR_NOT_IMPLEMENTED` naming
    /// the API, never a bare 404.
    static let notServedAPIs = [
        "bindings", "configuration", "actors", "workflows", "jobs", "conversation",
        "crypto", "subtlecrypto", "lock", "unlock",
    ]

    static var notServed: [Route] {
        ["v1.0", "v1.0-alpha1", "v1.0-beta1"].flatMap { version in
            notServedAPIs.map { api in
                Route(
                    [.GET, .POST, .PUT, .DELETE, .PATCH], "/\(version)/\(api)/{rest...}", name: "Unknown",
                    .atHead { request in
                        DaprHTTPError.response(
                            RequestError.unimplemented(
                                "the \(api) API (\(request.head.method) "
                                    + "\(RequestError.quotedPath(request.target.path)))"))
                    })
            }
        }
    }
}
