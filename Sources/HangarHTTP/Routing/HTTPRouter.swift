import Foundation
import NIOHTTP1

/// One route: the methods it answers, its path pattern, the name calls to it are counted under, and its handler.
///
/// A pattern is segments between slashes: a literal (`state`), a parameter (`{store}`, one segment, given
/// percent-decoded) or, last, a tail (`{method...}`, the rest of the path, zero or more segments, captured as it
/// was sent). `/v1.0/invoke/{id}/method/{method...}` matches `/v1.0/invoke/orders/method/a/b%2Fc` with `id` =
/// `orders` and the tail `a/b%2Fc`: `HTTPRouteParameters.raw("method")` gives it so, `parameters["method"]`
/// decoded (`a/b/c`, as Dapr's router decodes the path).
struct HTTPRoute<Handler: Sendable>: Sendable {
    /// The methods a route answers: `nil` for any.
    let methods: [HTTPMethod]?
    let pattern: String
    /// What calls to the route are counted under (the Dapr gRPC method's name, for the Dapr API).
    let name: String
    let handler: Handler

    init(_ methods: [HTTPMethod]?, _ pattern: String, name: String, _ handler: Handler) {
        self.methods = methods
        self.pattern = pattern
        self.name = name
        self.handler = handler
    }

    init(_ method: HTTPMethod, _ pattern: String, name: String, _ handler: Handler) {
        self.init([method], pattern, name: name, handler)
    }

    func answers(_ method: HTTPMethod) -> Bool { methods?.contains(method) ?? true }
}

/// A table of routes compiled once into a trie of path segments. Matching walks the request's path in place: no
/// array of segments, no dictionary of parameters, nothing allocated per request.
///
/// At each segment a literal is tried first, then a parameter, then a tail, backtracking when the rest of the path
/// (or the method) does not fit: `GET /v1.0/state/s/bulk` is the key `bulk` although `POST …/{store}/bulk` is a
/// route of its own. Empty segments are skipped (`//v1.0//healthz/` is `/v1.0/healthz`). The first route declared
/// wins among those that end on the same node.
struct HTTPRouter<Handler: Sendable>: Sendable {
    /// A matched route and the values of its parameters.
    struct Match: Sendable {
        let route: HTTPRoute<Handler>
        let parameters: HTTPRouteParameters
    }

    private struct Node: Sendable {
        var literals: [(segment: String, node: Int)] = []
        var parameter: Int?
        /// Routes that end at this node, and routes whose tail starts here.
        var routes: [Int] = []
        var tails: [Int] = []
    }

    private var nodes = [Node()]
    private var routes: [HTTPRoute<Handler>] = []
    /// The parameter names of each route, in the order the path gives them.
    private var names: [[String]] = []

    /// Compiles the table. A malformed pattern is a programming error and stops the program with its text.
    init(_ routes: [HTTPRoute<Handler>]) {
        for route in routes { add(route) }
    }

    private mutating func add(_ route: HTTPRoute<Handler>) {
        let index = routes.count
        routes.append(route)
        var routeNames: [String] = []
        var node = 0
        let segments = route.pattern.split(separator: "/")
        for (position, segment) in segments.enumerated() {
            if segment.hasPrefix("{"), segment.hasSuffix("...}") {
                precondition(position == segments.count - 1, "a tail must end the pattern: \(route.pattern)")
                routeNames.append(String(segment.dropFirst().dropLast(4)))
                nodes[node].tails.append(index)
                node = -1
                break
            }
            if segment.hasPrefix("{"), segment.hasSuffix("}") {
                routeNames.append(String(segment.dropFirst().dropLast()))
                node = child(of: node, parameter: true, literal: "")
            } else {
                precondition(!segment.contains("{") && !segment.contains("}"), "bad segment in \(route.pattern)")
                node = child(of: node, parameter: false, literal: String(segment))
            }
        }
        precondition(routeNames.count <= HTTPRouteParameters.capacity, "too many parameters: \(route.pattern)")
        precondition(Set(routeNames).count == routeNames.count, "a parameter name repeats: \(route.pattern)")
        if node >= 0 { nodes[node].routes.append(index) }
        names.append(routeNames)
    }

    private mutating func child(of node: Int, parameter: Bool, literal: String) -> Int {
        if parameter, let existing = nodes[node].parameter { return existing }
        if !parameter, let existing = nodes[node].literals.first(where: { $0.segment == literal }) {
            return existing.node
        }
        nodes.append(Node())
        let new = nodes.count - 1
        if parameter {
            nodes[node].parameter = new
        } else {
            nodes[node].literals.append((literal, new))
        }
        return new
    }

    /// The route for `method` on `path` (the request target's path, without its query), if any.
    func match(_ method: HTTPMethod, path: Substring) -> Match? {
        var values = HTTPRouteParameters.Values()
        guard let index = search(0, path, path.startIndex, method, &values) else { return nil }
        return Match(route: routes[index], parameters: HTTPRouteParameters(names: names[index], values: values))
    }

    private func search(
        _ nodeIndex: Int, _ path: Substring, _ position: String.Index, _ method: HTTPMethod,
        _ values: inout HTTPRouteParameters.Values
    ) -> Int? {
        let utf8 = path.utf8
        var start = position
        while start != utf8.endIndex, utf8[start] == UInt8(ascii: "/") { start = utf8.index(after: start) }
        let node = nodes[nodeIndex]
        if start == utf8.endIndex {
            if let route = node.routes.first(where: { routes[$0].answers(method) }) { return route }
            if let route = node.tails.first(where: { routes[$0].answers(method) }) {
                values.append(path[start..<start])
                return route
            }
            return nil
        }
        var end = start
        while end != utf8.endIndex, utf8[end] != UInt8(ascii: "/") { end = utf8.index(after: end) }
        let segment = path[start..<end]
        for literal in node.literals where segment.utf8.elementsEqual(literal.segment.utf8) {
            if let route = search(literal.node, path, end, method, &values) { return route }
        }
        if let parameter = node.parameter {
            let count = values.count
            values.append(segment)
            if let route = search(parameter, path, end, method, &values) { return route }
            values.count = count
        }
        if let route = node.tails.first(where: { routes[$0].answers(method) }) {
            values.append(path[start...])
            return route
        }
        return nil
    }
}

/// The values a matched route's parameters took, by name: slices of the request's path, kept without an array.
struct HTTPRouteParameters: Sendable {
    static let capacity = 4

    /// Up to `capacity` path slices, in the order the pattern names them.
    struct Values: Sendable {
        var count = 0
        private var slots: (Substring, Substring, Substring, Substring) = ("", "", "", "")

        mutating func append(_ value: Substring) {
            switch count {
            case 0: slots.0 = value
            case 1: slots.1 = value
            case 2: slots.2 = value
            default: slots.3 = value
            }
            count += 1
        }

        subscript(index: Int) -> Substring {
            switch index {
            case 0: slots.0
            case 1: slots.1
            case 2: slots.2
            default: slots.3
            }
        }
    }

    let names: [String]
    let values: Values

    /// The raw value of parameter `name` as it was in the path (percent-escapes kept), nil when the route has none.
    func raw(_ name: String) -> Substring? {
        guard let index = names.firstIndex(of: name), index < values.count else { return nil }
        return values[index]
    }

    /// The value of parameter `name` with its percent-escapes decoded (as it was when malformed); "" when the
    /// route has no such parameter.
    subscript(name: String) -> String {
        guard let value = raw(name) else { return "" }
        guard value.utf8.contains(UInt8(ascii: "%")) else { return String(value) }
        return value.removingPercentEncoding ?? String(value)
    }
}
