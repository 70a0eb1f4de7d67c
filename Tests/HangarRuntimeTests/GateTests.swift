import Testing

@testable import HangarRuntime

@Suite("Gate and identity")
struct GateTests {
    let registry = TenantRegistry(
        configuration: NodeConfiguration(
            tenants: [
                TenantSpec(namespace: "team-a", apps: [AppSpec(appId: "orders", apiToken: "token-a")]),
                TenantSpec(namespace: "team-b", apps: [AppSpec(appId: "orders", apiToken: "token-b")]),
            ],
            components: []),
        maxRequestBytes: 10)

    @Test("a TCP token identifies exactly its app; a wrong, empty or missing token is UNAUTHENTICATED")
    func tokens() throws {
        let gate = Gate(registry: registry)
        #expect(try gate.admit(.tcp, token: "token-a", connection: nil).caller.app == AppID(namespace: "team-a", appId: "orders"))
        #expect(try gate.admit(.tcp, token: "token-b", connection: nil).caller.app == AppID(namespace: "team-b", appId: "orders"))
        for token in [nil, "", "token-", "token-ab", "TOKEN-A"] {
            let error = #expect(throws: APIError.self) { try gate.admit(.tcp, token: token, connection: nil) }
            #expect(error?.rpcCode == .unauthenticated)
            #expect(error?.httpStatus == 401)
        }
    }

    @Test("on an app socket the connection is the app, whatever token it sends")
    func socketIdentity() throws {
        let gate = Gate(registry: registry)
        let app = AppID(namespace: "team-b", appId: "orders")
        #expect(try gate.admit(.app(app), token: "token-a", connection: nil).caller == Caller(app: app, transport: .unixSocket))
    }

    @Test("request size is checked against the limit")
    func size() throws {
        let gate = Gate(registry: registry)
        let admission = try gate.admit(.tcp, token: "token-a", connection: nil)
        try admission.checkSize(10)
        let error = #expect(throws: APIError.self) { try admission.checkSize(11) }
        #expect(error?.rpcCode == .resourceExhausted)
        admission.finish()
    }

    @Test("constant-time comparison agrees with equality")
    func constantTime() {
        #expect(TenantRegistry.constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        #expect(!TenantRegistry.constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        #expect(!TenantRegistry.constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        #expect(!TenantRegistry.constantTimeEquals([], Array("a".utf8)))
    }
}
