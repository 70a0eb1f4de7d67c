import NIOHTTP1
import Testing

@testable import HangarHTTP

@Suite("Dapr HTTP routes")
struct DaprHTTPRouteTests {
    func route(_ method: HTTPMethod, _ path: String) -> String {
        "\(DaprHTTPRoute.match(method, path: RequestTarget(path).path))"
    }

    @Test(
        "paths match the route Dapr defines for them",
        arguments: [
            (HTTPMethod.GET, "/v1.0/state/store/key", #"getState(store: "store", key: "key")"#),
            (.GET, "//v1.0//state/store/key/", #"getState(store: "store", key: "key")"#),
            (.GET, "/v1.0/state/my%20store/a%2Fb?metadata.x=1", #"getState(store: "my store", key: "a/b")"#),
            (.DELETE, "/v1.0/state/s/k", #"deleteState(store: "s", key: "k")"#),
            (.POST, "/v1.0/state/s", #"saveState(store: "s")"#),
            (.PUT, "/v1.0/state/s/bulk", #"bulkGetState(store: "s")"#),
            (.POST, "/v1.0/state/s/transaction", #"stateTransaction(store: "s")"#),
            (.POST, "/v1.0/state/s/other", "notFound"),
            (.GET, "/v1.0/state/s", "notFound"),
            (.GET, "/v1.0/state/s/k/extra", "notFound"),
            (.GET, "/v1.0/healthz", "health(outbound: false)"),
            (.GET, "/v1.0/healthz/outbound", "health(outbound: true)"),
            (.GET, "/v1.0/healthz/inbound", "notFound"),
            (.GET, "/v1.0/metadata", "getMetadata"),
            (.PUT, "/v1.0/metadata/k", #"setMetadata(key: "k")"#),
            (.POST, "/v1.0/shutdown", "shutdown"),
            (.POST, "/v1.0/invoke/app/method/a/b/c", #"unimplemented(api: "invoke")"#),
            (.POST, "/v1.0-alpha1/jobs/x", #"unimplemented(api: "jobs")"#),
            (.GET, "/", "notFound"),
            (.GET, "", "notFound"),
            (.GET, "/v2/state/s/k", "notFound"),
        ])
    func matches(method: HTTPMethod, path: String, expected: String) {
        #expect(route(method, path) == expected)
    }

    @Test("path segments are the non-empty parts between slashes")
    func segments() {
        let segments = PathSegments("//a/bb///c/d/e/"[...])
        #expect(segments.count == 5)
        #expect([segments[0], segments[1], segments[2], segments[3]] == ["a", "bb", "c", "d"])
        #expect(PathSegments("/"[...]).count == 0)
        #expect(PathSegments("x"[...]).count == 1)
    }

    @Test("stored metadata becomes a header only when it cannot split the response")
    func headerFields() {
        #expect(HTTPHeaderField.isValidName("ttlExpireTime"))
        #expect(!HTTPHeaderField.isValidName("a b"))
        #expect(!HTTPHeaderField.isValidName("a\r\nx"))
        #expect(!HTTPHeaderField.isValidName(""))
        #expect(HTTPHeaderField.isValidValue("2026-11-22T05:00:00Z, with\ttab"))
        #expect(!HTTPHeaderField.isValidValue("v\r\nset-cookie: x"))
        #expect(!HTTPHeaderField.isValidValue("nul\u{0}"))
    }
}
