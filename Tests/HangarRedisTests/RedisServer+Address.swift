@testable import HangarRedis
import HangarTestSupport

extension RedisServer {
    /// The server's TCP address, as the client takes it.
    var address: RedisConfiguration.Address { .tcp(host: "127.0.0.1", port: port) }
}
