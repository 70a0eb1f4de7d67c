import Foundation

/// How the runtime calls into an app (service invocation now; pub/sub delivery and bindings next): Tenant
/// `spec.apps[].appChannel`.
///
/// ```yaml
/// appChannel:
///   protocol: grpc                 # grpc (AppCallback) or http
///   address: 127.0.0.1:50051       # HOST:PORT, [IPv6]:PORT or unix:///absolute/path
///   maxConcurrency: 32             # calls into the app at once (default: unlimited)
///   healthCheck: {path: /healthz, intervalSeconds: 5, timeoutSeconds: 0.5, threshold: 3}
///   appApiToken: s3cret            # or appApiTokenFile: path (Dapr's APP_API_TOKEN)
/// ```
/// Without `address`, the app listens on `app-<appId>-grpc.socket` (or `-http.socket`) in its own socket directory.
package struct AppChannelSpec: Sendable, Hashable {
    package enum ChannelProtocol: String, Sendable, Hashable, CaseIterable {
        case grpc
        case http
    }

    package enum Address: Sendable, Hashable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unix(path: String)

        package var description: String {
            switch self {
            case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unix(let path): "unix://\(path)"
            }
        }
    }

    /// App health probing, as Dapr's `--enable-app-health-check` does it: a single success makes the app healthy,
    /// `threshold` failures in a row unhealthy. gRPC apps are probed with `AppCallbackHealthCheck/HealthCheck`,
    /// HTTP apps with `GET path` (2xx passes).
    package struct HealthCheck: Sendable, Hashable {
        package var path: String = "/healthz"
        package var interval: Duration = .seconds(5)
        package var timeout: Duration = .milliseconds(500)
        package var threshold: Int = 3

        package init() {}
    }

    package var `protocol`: ChannelProtocol
    /// Where the app serves; nil for the default socket in the app's directory (resolved by the node's socket
    /// layout).
    package var address: Address?
    package var healthCheck: HealthCheck?
    /// Calls into the app at once (Dapr's `--app-max-concurrency`); nil for unlimited.
    package var maxConcurrency: Int?
    /// Dapr's `APP_API_TOKEN`: sent as `dapr-api-token` on every call into the app (invocation, pub/sub delivery,
    /// health checks, subscription lists), so an app can tell its runtime's calls from anyone else's on its port.
    /// Nil: none is sent. Never logged.
    package var appApiToken: String?

    package init(
        protocol: ChannelProtocol, address: Address? = nil, healthCheck: HealthCheck? = nil, maxConcurrency: Int? = nil,
        appApiToken: String? = nil
    ) {
        self.protocol = `protocol`
        self.address = address
        self.healthCheck = healthCheck
        self.maxConcurrency = maxConcurrency
        self.appApiToken = appApiToken
    }

    /// Reads `spec.apps[].appChannel` of the Tenant file at `documentPath` (a relative `appApiTokenFile` is read
    /// from the Tenant file's directory).
    init(_ node: YAMLMapping, documentPath: String) throws(ConfigurationError) {
        try node.rejectUnknownKeys([
            "protocol", "address", "healthCheck", "maxConcurrency", "appApiToken", "appApiTokenFile",
        ])
        appApiToken = try TokenSource.read(
            node, tokenKey: "appApiToken", fileKey: "appApiTokenFile", documentPath: documentPath)
        let name = try node.string("protocol") ?? "grpc"
        guard let parsed = ChannelProtocol(rawValue: name) else {
            throw node.error("protocol", "must be grpc or http, not '\(name)'")
        }
        self.protocol = parsed
        if let text = try node.string("address") {
            guard let address = Self.address(text) else {
                throw node.error(
                    "address", "'\(text)' must be HOST:PORT, [IPv6]:PORT or unix:///absolute/path (at most 107 bytes)")
            }
            self.address = address
        }
        if let limit = try node.int("maxConcurrency") {
            guard limit > 0 else { throw node.error("maxConcurrency", "must be a positive integer") }
            maxConcurrency = limit
        }
        if let probe = try node.mapping("healthCheck") {
            try probe.rejectUnknownKeys(["path", "intervalSeconds", "timeoutSeconds", "threshold"])
            var check = HealthCheck()
            if let path = try probe.string("path") {
                guard path.hasPrefix("/"), !path.contains(where: { $0.isWhitespace || $0 == "?" || $0 == "#" }) else {
                    throw probe.error("path", "must be an absolute path such as /healthz")
                }
                check.path = path
            }
            func seconds(_ key: String, _ range: ClosedRange<Double>) throws(ConfigurationError) -> Duration? {
                guard probe.has(key) else { return nil }
                let value: Double? =
                    switch probe.values[key] {
                    case let int as Int: Double(int)
                    case let double as Double: double
                    case let string as String: Double(string)
                    default: nil
                    }
                guard let value, range.contains(value) else {
                    throw probe.error(key, "must be a number of seconds from \(range.lowerBound) to \(range.upperBound)")
                }
                return .milliseconds(Int64(value * 1000))
            }
            check.interval = try seconds("intervalSeconds", 0.1...3600) ?? check.interval
            check.timeout = try seconds("timeoutSeconds", 0.01...60) ?? check.timeout
            if let threshold = try probe.int("threshold") {
                guard (1...100).contains(threshold) else { throw probe.error("threshold", "must be from 1 to 100") }
                check.threshold = threshold
            }
            healthCheck = check
        }
    }

    /// `HOST:PORT`, `[IPv6]:PORT` or `unix:///absolute/path`.
    static func address(_ text: String) -> Address? {
        if text.hasPrefix("unix://") {
            let path = String(text.dropFirst("unix://".count))
            guard path.hasPrefix("/"), path.utf8.count <= 107, !path.utf8.contains(0) else { return nil }
            return .unix(path: path)
        }
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                return nil
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return nil }
        }
        guard !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "/" }), let number = Int(port),
            (1...65535).contains(number)
        else { return nil }
        return .tcp(host: String(host), port: number)
    }
}

/// Who may invoke a tenant's apps from another namespace: Tenant `spec.allowInvocationFrom[]`. Calls across
/// namespaces are denied unless a grant matches; an empty `appIds` means every app of that namespace, an empty
/// `methods` every method (each is a path prefix: `orders/` allows `orders/1`; `orders` also `orders-old`).
package struct InvocationGrant: Sendable, Hashable {
    package var namespace: String
    package var appIds: [String]
    package var methods: [String]

    package init(namespace: String, appIds: [String] = [], methods: [String] = []) {
        self.namespace = namespace
        self.appIds = appIds
        self.methods = methods
    }

    /// Whether this grant lets `caller` call `method` (without its leading slash).
    package func allows(_ caller: AppID, method: String) -> Bool {
        caller.namespace == namespace && (appIds.isEmpty || appIds.contains(caller.appId))
            && (methods.isEmpty || methods.contains { method.hasPrefix($0) })
    }

    init(_ node: YAMLMapping) throws(ConfigurationError) {
        try node.rejectUnknownKeys(["namespace", "appIds", "methods"])
        namespace = try node.requiredString("namespace")
        if let problem = Names.dns1123Problem(namespace) { throw node.error("namespace", problem) }
        appIds = try node.stringList("appIds")
        for appId in appIds {
            if let problem = Names.dns1123Problem(appId) { throw node.error("appIds", "'\(appId)': \(problem)") }
        }
        methods = try node.stringList("methods").map { $0.hasPrefix("/") ? String($0.dropFirst()) : $0 }
        if methods.contains(where: \.isEmpty) { throw node.error("methods", "an empty method prefix; omit methods") }
    }
}
