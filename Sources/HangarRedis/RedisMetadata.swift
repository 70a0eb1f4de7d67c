package import HangarComponents
package import NIOCore

/// How a Redis component's metadata (Dapr's names, `common/component/redis/settings.go`) becomes a
/// `RedisConfiguration` and the client's options: what `state.redis` and `pubsub.redis` share.
///
/// Durations are Go durations (`500ms`, `3s`) or, as Dapr reads them, integers of milliseconds. What the Hangar
/// client cannot do yet is refused with the field named (several hosts, cluster, sentinel); go-redis's pool
/// knobs are accepted and have no effect (the shared client has its own policy: `RedisClient`), except `poolSize`
/// and `idleTimeout` (how long a connection beyond the first on its event loop may stay idle; `-1` or `0`: never
/// closed; Hangar's default 30 s).
package struct RedisMetadata: Sendable {
    package var configuration: RedisConfiguration
    package var options: RedisClient.Options
    /// Each command's deadline: `readTimeout` (Dapr's default, 3 s).
    package var commandTimeout: TimeAmount

    /// The connection metadata every Redis component reads.
    package static let connectionFields: [ComponentMetadataField] =
        [ComponentMetadataField("redisHost", required: true)]
        + [
            "redisPort", "redisUsername", "redisPassword", "redisDB", "redisType", "failover", "sentinelMasterName",
            "sentinelUsername",
            "sentinelPassword", "dialTimeout", "readTimeout", "writeTimeout", "poolSize", "redisMaxRetries",
            "maxRetries", "redisMinRetryInterval", "redisMaxRetryInterval", "maxRetryBackoff", "poolTimeout",
            "minIdleConns", "maxConnAge", "idleTimeout", "idleCheckFrequency", "useEntraID",
        ].map { ComponentMetadataField($0) } + tlsFields

    /// Reads the connection metadata; `clientName` is what `CLIENT LIST` shows for the component's connections.
    package init(_ metadata: [String: String], clientName: String) throws(ComponentDefinitionError) {
        let text = { (name: String) in Self.text(metadata, name) }
        if let hosts = text("redisHost"), hosts.contains(",") {
            throw .metadata("redisHost", "several hosts (a cluster or sentinels) are not supported yet; give one host:port")
        }
        if let type = text("redisType"), type.lowercased() != "node" {
            throw .metadata("redisType", "'\(type)' is not supported yet: only 'node' (one server)")
        }
        if try Self.flag(metadata, "failover") {
            throw .metadata("failover", "Redis Sentinel failover is not supported yet")
        }
        if text("sentinelMasterName") != nil {
            throw .metadata("sentinelMasterName", "Redis Sentinel is not supported yet")
        }
        if try Self.flag(metadata, "useEntraID") {
            throw .metadata("useEntraID", "Microsoft Entra ID authentication is not supported")
        }
        guard let hostText = text("redisHost") else { throw .metadata("redisHost", "is required (host:port)") }
        var (host, port) = try Self.hostAndPort(hostText)
        if let portText = text("redisPort") {
            guard let value = Int(portText), (1...65535).contains(value) else {
                throw .metadata("redisPort", "must be a port number, not '\(portText)'")
            }
            if let given = port, given != value {
                throw .metadata("redisPort", "\(value) conflicts with the port \(given) in redisHost")
            }
            port = value
        }
        var database = 0
        if let dbText = text("redisDB") {
            guard let value = Int(dbText), value >= 0 else {
                throw .metadata("redisDB", "must be a database number (0 or more), not '\(dbText)'")
            }
            database = value
        }
        var configuration = RedisConfiguration(
            address: .tcp(host: host, port: port ?? 6379), username: text("redisUsername"),
            password: metadata["redisPassword"].flatMap { $0.isEmpty ? nil : $0 }, database: database,
            clientName: clientName)
        if let timeout = try Self.duration(metadata, "dialTimeout") { configuration.connectTimeout = timeout }
        configuration.tls = try Self.tls(metadata, host: host)
        var options = RedisClient.Options()
        if let poolText = text("poolSize") {
            guard let value = Int(poolText), (1...1024).contains(value) else {
                throw .metadata("poolSize", "must be a number of connections from 1 to 1024, not '\(poolText)'")
            }
            options.maxConnections = value
        }
        if let idleText = text("idleTimeout"), idleText == "-1" || idleText == "0" || idleText == "0s" {
            options.idleTimeout = nil
        } else if let idle = try Self.duration(metadata, "idleTimeout") {
            options.idleTimeout = idle
        }
        self.configuration = configuration
        self.options = options
        self.commandTimeout = try Self.duration(metadata, "readTimeout") ?? .seconds(3)
    }

    /// `host:port`, `host` or `[v6]:port`.
    static func hostAndPort(_ text: String) throws(ComponentDefinitionError) -> (String, Int?) {
        var host = Substring(text)
        var portText: Substring?
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { throw .metadata("redisHost", "'\(text)' lacks its ']'") }
            let rest = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
                throw .metadata("redisHost", "'\(text)' is not host:port")
            }
        } else if let colon = host.lastIndex(of: ":") {
            portText = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty, !host.contains("/") else { throw .metadata("redisHost", "'\(text)' is not host:port") }
        guard let portText else { return (String(host), nil) }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw .metadata("redisHost", "the port in '\(text)' is not a port number")
        }
        return (String(host), port)
    }

    /// A duration as Dapr's Redis metadata reads it: an integer of milliseconds, or a Go duration; positive.
    static func duration(_ metadata: [String: String], _ name: String) throws(ComponentDefinitionError) -> TimeAmount? {
        guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
        let value: Duration? = Int64(text).map { .milliseconds($0) } ?? GoDuration.parse(text)
        guard let value, value > .zero else {
            throw .metadata(name, "'\(text)' is not a positive duration (e.g. 500ms, 3s, or milliseconds)")
        }
        return .nanoseconds(value.components.seconds * 1_000_000_000 + value.components.attoseconds / 1_000_000_000)
    }

    /// A metadata value without surrounding blanks; nil when absent or blank.
    static func text(_ metadata: [String: String], _ name: String) -> String? {
        guard let value = metadata[name]?.trimmingCharacters(in: .whitespacesAndNewlines), !value.isEmpty else {
            return nil
        }
        return value
    }

    /// A boolean as Dapr's `utils.IsTruthy` reads one (false when absent); a value that is neither true nor false
    /// is refused rather than read as false.
    static func flag(_ metadata: [String: String], _ name: String) throws(ComponentDefinitionError) -> Bool {
        guard let value = text(metadata, name) else { return false }
        switch value.lowercased() {
        case "true", "1", "t", "yes", "y", "on": return true
        case "false", "0", "f", "no", "n", "off": return false
        default: throw .metadata(name, "must be true or false, not '\(value)'")
        }
    }
}
