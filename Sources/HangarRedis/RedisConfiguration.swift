package import NIOCore

/// Where a Redis server is and how to log in: what every connection of a component shares.
package struct RedisConfiguration: Sendable, Hashable {
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

    package var address: Address
    /// ACL user (Redis 6+); nil: the default user.
    package var username: String?
    /// nil: no AUTH.
    package var password: String?
    /// `SELECT`ed after login when not 0.
    package var database: Int
    /// Sent with HELLO (`CLIENT SETNAME`), so `CLIENT LIST` shows whose connection it is.
    package var clientName: String?
    package var connectTimeout: TimeAmount
    package var limits: RESPDecoder.Limits

    package init(
        address: Address, username: String? = nil, password: String? = nil, database: Int = 0,
        clientName: String? = "hangard", connectTimeout: TimeAmount = .seconds(1),
        limits: RESPDecoder.Limits = .init()
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.clientName = clientName
        self.connectTimeout = connectTimeout
        self.limits = limits
    }
}
