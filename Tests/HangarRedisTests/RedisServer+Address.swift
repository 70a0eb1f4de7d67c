@testable import HangarRedis
import HangarTestSupport

extension RedisServer {
    /// The server's TCP address, as the client takes it.
    var address: RedisConfiguration.Address { .tcp(host: "127.0.0.1", port: port) }
}

extension RedisConfiguration {
    /// The configuration of a client of `server` in the tests: a 10 s connect (and handshake) timeout rather than
    /// the 1 s default, because CI runs the whole suite at once on two cores, where a connection can take longer to
    /// be set up. A server that is down still refuses at once: the outage tests are not slowed.
    init(testing server: RedisServer, database: Int = 0, clientName: String? = "hangard") {
        self.init(address: server.address, database: database, clientName: clientName, connectTimeout: .seconds(10))
    }
}
