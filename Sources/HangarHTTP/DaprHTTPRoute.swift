import Foundation
import NIOHTTP1

/// The Dapr HTTP API's routes (`/v1.0/...`), matched from a request's method and target without allocating a
/// router: the path's segments are found once and compared with the few shapes Dapr defines.
enum DaprHTTPRoute: Sendable {
    case health(outbound: Bool)
    case saveState(store: String)
    case bulkGetState(store: String)
    case stateTransaction(store: String)
    case getState(store: String, key: String)
    case deleteState(store: String, key: String)
    case getMetadata
    case setMetadata(key: String)
    case shutdown
    /// A Dapr API this build does not serve: 501 naming it, never a bare 404.
    case unimplemented(api: String)
    case notFound

    /// The Dapr gRPC method a route corresponds to, under which calls are counted in the metrics.
    var methodName: String {
        switch self {
        case .health: "Healthz"
        case .saveState: "SaveState"
        case .bulkGetState: "GetBulkState"
        case .stateTransaction: "ExecuteStateTransaction"
        case .getState: "GetState"
        case .deleteState: "DeleteState"
        case .getMetadata: "GetMetadata"
        case .setMetadata: "SetMetadata"
        case .shutdown: "Shutdown"
        case .unimplemented, .notFound: "Unknown"
        }
    }

    static let unimplementedAPIs: Set<Substring> = [
        "publish", "invoke", "bindings", "secrets", "configuration", "actors", "workflows", "jobs",
        "conversation", "crypto", "subtlecrypto", "lock", "unlock",
    ]

    static func match(_ method: HTTPMethod, path: Substring) -> DaprHTTPRoute {
        let segments = PathSegments(path)
        guard segments.count > 0 else { return .notFound }
        let version = segments[0]
        let restCount = segments.count - 1
        let api: Substring? = restCount > 0 ? segments[1] : nil
        let isWrite = method == .POST || method == .PUT
        if version == "v1.0" {
            switch (api, restCount) {
            case ("healthz", 1) where method == .GET:
                return .health(outbound: false)
            case ("healthz", 2) where method == .GET && segments[2] == "outbound":
                return .health(outbound: true)
            case ("state", 2) where isWrite:
                return .saveState(store: decoded(segments[2]))
            case ("state", 3):
                let store = decoded(segments[2])
                let last = segments[3]
                switch method {
                case .GET: return .getState(store: store, key: decoded(last))
                case .DELETE: return .deleteState(store: store, key: decoded(last))
                case .POST, .PUT:
                    if last == "bulk" { return .bulkGetState(store: store) }
                    if last == "transaction" { return .stateTransaction(store: store) }
                    return .notFound
                default: return .notFound
                }
            case ("metadata", 1) where method == .GET:
                return .getMetadata
            case ("metadata", 2) where method == .PUT:
                return .setMetadata(key: decoded(segments[2]))
            case ("shutdown", 1) where isWrite:
                return .shutdown
            default:
                break
            }
        }
        if version == "v1.0" || version == "v1.0-alpha1" || version == "v1.0-beta1",
            let api, unimplementedAPIs.contains(api),
            [.GET, .POST, .PUT, .DELETE, .PATCH].contains(method)
        {
            return .unimplemented(api: String(api))
        }
        return .notFound
    }

    /// A path segment with its percent-escapes decoded (as it was when malformed).
    static func decoded(_ segment: Substring) -> String {
        guard segment.utf8.contains(UInt8(ascii: "%")) else { return String(segment) }
        return segment.removingPercentEncoding ?? String(segment)
    }
}

/// The non-empty segments of a path, as `split(separator: "/")` gives them, without an array: the routes need the
/// first four and the count.
struct PathSegments {
    private(set) var count = 0
    private var first: (Substring, Substring, Substring, Substring) = ("", "", "", "")

    init(_ path: Substring) {
        let utf8 = path.utf8
        var start = utf8.startIndex
        var index = start
        while index != utf8.endIndex {
            if utf8[index] == UInt8(ascii: "/") {
                if index > start { append(path[start..<index]) }
                start = utf8.index(after: index)
            }
            index = utf8.index(after: index)
        }
        if index > start { append(path[start..<index]) }
    }

    private mutating func append(_ segment: Substring) {
        switch count {
        case 0: first.0 = segment
        case 1: first.1 = segment
        case 2: first.2 = segment
        case 3: first.3 = segment
        default: break
        }
        count += 1
    }

    /// One of the first four segments.
    subscript(index: Int) -> Substring {
        switch index {
        case 0: first.0
        case 1: first.1
        case 2: first.2
        case 3: first.3
        default: preconditionFailure("only the first four segments are kept")
        }
    }
}

/// A request target split into its path and its query parameters.
struct RequestTarget {
    let path: Substring
    let query: Substring?

    init(_ uri: String) {
        if let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = uri[..<mark]
            query = uri[uri.index(after: mark)...]
        } else {
            path = uri[...]
            query = nil
        }
    }

    /// Every query parameter, names and values percent-decoded (`+` as a space), in order.
    var parameters: [(name: String, value: String)] {
        guard let query else { return [] }
        return query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (part: Substring) in
                let spaced = part.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    func parameter(_ name: String) -> String? {
        parameters.first { $0.name == name }?.value
    }

    /// `metadata.<name>=<value>` parameters, as Dapr passes request metadata over HTTP.
    var metadata: [String: String] {
        var metadata: [String: String] = [:]
        for (name, value) in parameters where name.hasPrefix("metadata.") {
            metadata[String(name.dropFirst("metadata.".count))] = value
        }
        return metadata
    }
}
