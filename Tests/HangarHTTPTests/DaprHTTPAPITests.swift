import NIOHTTP1
import Testing

@testable import HangarHTTP

@Suite("Dapr HTTP routes")
struct DaprHTTPAPITests {
    /// The matched route's name and its parameters (decoded), or "404".
    func route(_ method: HTTPMethod, _ path: String) -> String {
        guard let match = DaprHTTPAPI.router.match(method, path: RequestTarget(path).path) else { return "404" }
        let parameters = match.parameters.names.map { "\($0)=\(match.parameters[$0])" }
        return ([match.route.name] + parameters).joined(separator: " ")
    }

    @Test(
        "paths match the route Dapr defines for them",
        arguments: [
            (HTTPMethod.GET, "/v1.0/state/store/key", "GetState store=store key=key"),
            (.GET, "//v1.0//state/store/key/", "GetState store=store key=key"),
            (.GET, "/v1.0/state/my%20store/a%2Fb?metadata.x=1", "GetState store=my store key=a/b"),
            (.GET, "/v1.0/state/s/bulk", "GetState store=s key=bulk"),
            (.DELETE, "/v1.0/state/s/k", "DeleteState store=s key=k"),
            (.POST, "/v1.0/state/s", "SaveState store=s"),
            (.PUT, "/v1.0/state/s/bulk", "GetBulkState store=s"),
            (.POST, "/v1.0/state/s/transaction", "ExecuteStateTransaction store=s"),
            (.POST, "/v1.0/state/s/other", "404"),
            (.GET, "/v1.0/state/s", "404"),
            (.GET, "/v1.0/state/s/k/extra", "404"),
            (.GET, "/v1.0/healthz", "Healthz"),
            (.GET, "/v1.0/healthz/outbound", "Healthz"),
            (.GET, "/v1.0/healthz/inbound", "404"),
            (.POST, "/v1.0/healthz", "404"),
            (.GET, "/v1.0/metadata", "GetMetadata"),
            (.PUT, "/v1.0/metadata/k", "SetMetadata key=k"),
            (.POST, "/v1.0/shutdown", "Shutdown"),
            (.POST, "/v1.0/invoke/app/method/a/b/c", "InvokeService id=app method=a/b/c"),
            (.DELETE, "/v1.0/invoke/app/method", "InvokeService id=app method="),
            (.POST, "/v1.0-alpha1/jobs/x", "Unknown rest=x"),
            (.GET, "/v1.0/bindings", "Unknown rest="),
            (.POST, "/v1.0/publish/p/a/b%2Fc", "PublishEvent pubsub=p topic=a/b/c"),
            (.PUT, "/v1.0/publish/p", "PublishEvent pubsub=p topic="),
            (.GET, "/v1.0/publish/p/t", "404"),
            (.POST, "/v1.0/publish/bulk/p/t", "BulkPublishEvent pubsub=p topic=t"),
            (.POST, "/v1.0-alpha1/publish/bulk/p/t/u", "BulkPublishEventAlpha1 pubsub=p topic=t/u"),
            (.GET, "/", "404"),
            (.GET, "", "404"),
            (.GET, "/v2/state/s/k", "404"),
        ])
    func matches(method: HTTPMethod, path: String, expected: String) {
        #expect(route(method, path) == expected)
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
