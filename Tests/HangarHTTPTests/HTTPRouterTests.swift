import NIOHTTP1
import Testing

@testable import HangarHTTP

@Suite("HTTP router")
struct HTTPRouterTests {
    typealias Route = HTTPRoute<Int>

    let router = HTTPRouter<Int>([
        Route(.GET, "/v1.0/items/{id}", name: "get", 1),
        Route(.POST, "/v1.0/items/{id}/special", name: "special", 2),
        Route(.GET, "/v1.0/items/{id}/{field}", name: "field", 3),
        Route(nil, "/v1.0/invoke/{app}/method/{method...}", name: "invoke", 4),
        Route([.GET, .HEAD], "/v1.0/files/{path...}", name: "files", 5),
        Route(.GET, "/v1.0/items/all", name: "all", 6),
    ])

    func describe(_ method: HTTPMethod, _ path: String) -> String {
        guard let match = router.match(method, path: path[...]) else { return "none" }
        let parameters = match.parameters.names.map { "\($0)=\(match.parameters.raw($0) ?? "?")" }
        return ([match.route.name] + parameters).joined(separator: " ")
    }

    @Test(
        "a path matches literals first, then a parameter, then a tail, and backtracks on the method",
        arguments: [
            (HTTPMethod.GET, "/v1.0/items/7", "get id=7"),
            (.GET, "/v1.0/items/all", "all"),
            (.POST, "/v1.0/items/7/special", "special id=7"),
            (.GET, "/v1.0/items/7/special", "field id=7 field=special"),
            (.DELETE, "/v1.0/items/7", "none"),
            (.GET, "/v1.0/items", "none"),
            (.GET, "/v1.0/items/7/a/b", "none"),
        ])
    func literalsParametersAndMethods(method: HTTPMethod, path: String, expected: String) {
        #expect(describe(method, path) == expected)
    }

    @Test(
        "a tail takes the rest of the path as it was sent, or nothing",
        arguments: [
            (HTTPMethod.PATCH, "/v1.0/invoke/orders/method/a/b%2Fc/", "invoke app=orders method=a/b%2Fc/"),
            (.GET, "/v1.0/invoke/orders/method", "invoke app=orders method="),
            (.GET, "/v1.0/invoke/orders/method/x", "invoke app=orders method=x"),
            (.HEAD, "/v1.0/files//deep//x.txt", "files path=deep//x.txt"),
            (.POST, "/v1.0/files/x", "none"),
            (.GET, "/v1.0/invoke/orders", "none"),
        ])
    func tails(method: HTTPMethod, path: String, expected: String) {
        #expect(describe(method, path) == expected)
    }

    @Test("parameters are percent-decoded on request, and a malformed escape is kept as it is")
    func decoding() throws {
        let match = try #require(router.match(.GET, path: "/v1.0/items/a%2Fb%20c/100%zz"[...]))
        #expect(match.parameters["id"] == "a/b c")
        #expect(match.parameters["field"] == "100%zz")
        #expect(match.parameters["missing"] == "")
        #expect(match.parameters.raw("missing") == nil)
    }

    @Test("the first route declared wins among routes for the same method and path")
    func firstDeclaredWins() {
        let router = HTTPRouter<Int>([Route(.GET, "/a/{x}", name: "first", 1), Route(.GET, "/a/{y}", name: "second", 2)])
        #expect(router.match(.GET, path: "/a/1"[...])?.route.name == "first")
    }
}
