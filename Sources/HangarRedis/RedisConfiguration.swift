package import NIOCore
package import NIOSSL

/// Where a Redis server is and how to log in: what every connection of a component shares.
package struct RedisConfiguration: Sendable {
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
    /// TLS (Dapr's `enableTLS`); nil: plain TCP.
    package var tls: RedisTLS?

    package init(
        address: Address, username: String? = nil, password: String? = nil, database: Int = 0,
        clientName: String? = "hangard", connectTimeout: TimeAmount = .seconds(1),
        limits: RESPDecoder.Limits = .init(), tls: RedisTLS? = nil
    ) {
        self.address = address
        self.username = username
        self.password = password
        self.database = database
        self.clientName = clientName
        self.connectTimeout = connectTimeout
        self.limits = limits
        self.tls = tls
    }
}

/// TLS to a Redis server: the context is made once, when the component's metadata is read (a bad certificate or key
/// is refused then), and shared by every connection.
///
/// The server's certificate chain is verified against the trust roots given (`caCert`, else the system's) unless
/// verification is turned off (`insecureSkipTLSVerify`); its name is checked against the host connected to when
/// that is a DNS name (an IP address is verified by chain only: SNI cannot carry one).
package final class RedisTLS: Sendable {
    package let context: NIOSSLContext
    /// The name sent in SNI and checked against the certificate; nil for an IP address.
    package let serverHostname: String?

    package init(configuration: TLSConfiguration, host: String) throws {
        context = try NIOSSLContext(configuration: configuration)
        let isAddress = host.contains(":") || host.split(separator: ".").allSatisfy { UInt8($0) != nil }
        serverHostname = isAddress ? nil : host
    }
}
