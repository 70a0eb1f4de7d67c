import ArgumentParser
import HangarTransport

/// A TCP listen address from a flag: `HOST:PORT`, `[IPv6]:PORT`, or `none`.
struct ListenAddress: Sendable, Hashable {
    var host: String
    var port: Int

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// nil when the flag says `none`.
    init?(_ text: String, flag: String) throws {
        if text == "none" { return nil }
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw ValidationError("\(flag) must be HOST:PORT or 'none', not '\(text)'") }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ValidationError("\(flag) needs a host, e.g. 127.0.0.1:\(port)") }
        self.host = host
        self.port = port
    }
}

/// The daemon's settings that are not tenancy or components.
struct NodeOptions: Sendable {
    var socketRoot: String
    var dataDirectory: String
    var http: ListenAddress?
    var grpc: ListenAddress?
    /// The Prometheus endpoint's listener (`--metrics-listen`); nil when `none`.
    var metrics: ListenAddress?
    var drainTimeout: Duration
    /// The API connections' header, request-progress and idle timeouts.
    var timeouts = ConnectionTimeouts()
    /// The directories the configuration came from (nil: the development default), watched for changes.
    var tenancyDirectory: String?
    var resourcesDirectory: String?
    /// How often the files are re-checked besides inotify; nil turns watching off (`--watch-interval 0`).
    var watchInterval: Duration?
    /// Listening sockets from socket activation, used instead of binding `http`, `grpc` and `metrics`.
    var inherited: InheritedListeners = .none
    var environment: [String: String] = [:]
}
