package import HangarComponents
package import NIOCore

/// The connection metadata every Redis component reads, with the names and meaning of Dapr's
/// `common/component/redis` settings, read in one place so that `state.redis` and `pubsub.redis` never disagree:
/// where the server is, how to log in, how many shared connections, how long a command may take.
///
/// - `redisHost` (required): `host:port` (port 6379 when absent; `[::1]:6379` for IPv6), or a Unix socket path
///   (`/run/redis.sock`, `unix:///run/redis.sock`). `redisPort` sets the port when the host has none, and is
///   refused when it disagrees with one the host has (as Dapr).
/// - `redisPassword`, `redisUsername` (an ACL user, Redis 6+). Never in messages or logs.
/// - `redisDB`: the database `SELECT`ed after login (default 0).
/// - `poolSize`: the most shared command connections for the whole node (default 8; Dapr's is 10 per CPU per
///   sidecar). Blocking reads have connections of their own on top (see `pubsub.redis`).
/// - `dialTimeout`: how long connecting may take (default 1s); `readTimeout`: the deadline of each command
///   (default 1s, so that calls fail fast when the server is gone). Durations as Dapr reads them: a Go duration
///   (`500ms`, `2s`) or an integer of milliseconds.
/// - Refused with a clear error, because this build cannot honour them: `enableTLS: true`, `redisType` other
///   than `node` (cluster), `failover: true` (Sentinel), `useEntraID`/`useOIDC: true`.
package struct RedisMetadata: Sendable, Hashable {
    package var configuration: RedisConfiguration
    package var options: RedisClient.Options
    /// The deadline of each command (`readTimeout`).
    package var commandTimeout: TimeAmount

    /// The names `init(_:type:)` reads, for the descriptors (`redisHost` required).
    package static let fields: [ComponentMetadataField] =
        [ComponentMetadataField("redisHost", required: true)]
        + [
            "redisPort", "redisPassword", "redisUsername", "redisDB", "poolSize", "dialTimeout", "readTimeout",
            "enableTLS", "redisType", "failover", "useEntraID", "useOIDC",
        ].map { ComponentMetadataField($0) }

    /// Reads the connection settings of a component of `type` (for messages); a bad value is refused naming its
    /// field.
    package init(_ metadata: [String: String], type: String) throws(ComponentDefinitionError) {
        func text(_ name: String) -> String? {
            guard let value = metadata[name]?.trimmingCharacters(in: .whitespaces), !value.isEmpty else { return nil }
            return value
        }
        for name in ["enableTLS", "failover", "useEntraID", "useOIDC"] where try Self.boolean(metadata, name) == true {
            let what =
                switch name {
                case "enableTLS": "TLS to Redis is not supported by this build yet"
                case "failover": "Redis Sentinel (failover) is not supported yet: give the master as redisHost"
                default: "\(name) authentication is not supported: use redisUsername and redisPassword"
                }
            throw .metadata(name, "\(what) (\(type))")
        }
        if let redisType = text("redisType"), redisType.lowercased() != "node" {
            throw .metadata(
                "redisType",
                "only 'node' is supported by \(type), not '\(redisType)' (Redis Cluster is not supported yet)")
        }
        guard let host = text("redisHost") else { throw .metadata("redisHost", "is required by \(type)") }
        let port = try Self.integer(metadata, "redisPort", in: 1...65535)
        let address = try Self.address(host, port: port)
        let database = try Self.integer(metadata, "redisDB", in: 0...Int(Int32.max)) ?? 0
        let connectTimeout = try Self.duration(metadata, "dialTimeout").map(TimeAmount.init) ?? .seconds(1)
        configuration = RedisConfiguration(
            address: address, username: text("redisUsername"),
            password: metadata["redisPassword"].flatMap {
                $0.isEmpty ? nil : $0
            }, database: database, connectTimeout: connectTimeout)
        options = RedisClient.Options()
        if let poolSize = try Self.integer(metadata, "poolSize", in: 1...1024) { options.maxConnections = poolSize }
        commandTimeout = try Self.duration(metadata, "readTimeout").map(TimeAmount.init) ?? .seconds(1)
        guard commandTimeout > .zero, connectTimeout > .zero else {
            throw .metadata(commandTimeout > .zero ? "dialTimeout" : "readTimeout", "must be positive")
        }
    }

    /// `redisHost` (with `redisPort`) as an address.
    static func address(_ host: String, port: Int?) throws(ComponentDefinitionError) -> RedisConfiguration.Address {
        if host.hasPrefix("unix://") { return .unix(path: String(host.dropFirst("unix://".count))) }
        if host.hasPrefix("/") { return .unix(path: host) }
        if host.contains(",") {
            throw .metadata("redisHost", "several hosts are for Redis Cluster or Sentinel, which are not supported yet")
        }
        var name = host
        var given: Int?
        if host.hasPrefix("[") {
            // [v6]:port or [v6]
            guard let close = host.firstIndex(of: "]") else {
                throw .metadata("redisHost", "'\(host)' is not host:port")
            }
            name = String(host[host.index(after: host.startIndex)..<close])
            let rest = host[host.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else {
                    throw .metadata("redisHost", "'\(host)' is not host:port")
                }
                given = value
            }
        } else if let colon = host.lastIndex(of: ":"), host.firstIndex(of: ":") == colon {
            name = String(host[..<colon])
            guard let value = Int(host[host.index(after: colon)...]) else {
                throw .metadata("redisHost", "'\(host)' is not host:port")
            }
            given = value
        }
        if let given {
            guard (1...65535).contains(given) else { throw .metadata("redisHost", "port \(given) is out of range") }
            if let port, port != given {
                throw .metadata(
                    "redisPort", "redisHost '\(host)' already has port \(given), which differs from redisPort \(port)")
            }
        }
        guard !name.isEmpty else { throw .metadata("redisHost", "'\(host)' has no host name") }
        return .tcp(host: name, port: given ?? port ?? 6379)
    }

    /// A duration as Dapr's Redis settings read it: an integer is milliseconds, anything else a Go duration
    /// (`30s`, `500ms`, `1m`). Nil when absent or empty; negative values are refused.
    package static func duration(
        _ metadata: [String: String], _ name: String
    ) throws(ComponentDefinitionError) -> Duration? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        if let milliseconds = Int64(text) {
            guard milliseconds >= 0 else { throw .metadata(name, "must not be negative") }
            return .milliseconds(milliseconds)
        }
        guard let value = GoDuration.parse(text), value >= .zero else {
            throw .metadata(name, "'\(text)' is not a duration (e.g. 30s, 500ms, or an integer of milliseconds)")
        }
        return value
    }

    /// An integer in `range`; nil when absent or empty.
    package static func integer(
        _ metadata: [String: String], _ name: String, in range: ClosedRange<Int>
    ) throws(ComponentDefinitionError) -> Int? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        guard let value = Int(text), range.contains(value) else {
            throw .metadata(name, "must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return value
    }

    /// A boolean as Go's `strconv.ParseBool` reads it (`true`, `1`, `t`, `false`, `0`, `f`, any case); nil when
    /// absent or empty.
    package static func boolean(
        _ metadata: [String: String], _ name: String
    ) throws(ComponentDefinitionError) -> Bool? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        switch text.lowercased() {
        case "true", "1", "t": return true
        case "false", "0", "f": return false
        default: throw .metadata(name, "must be true or false, not '\(text)'")
        }
    }
}
