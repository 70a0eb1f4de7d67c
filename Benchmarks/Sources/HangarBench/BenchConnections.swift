/// The client connections a phase's callers use: caller `i` runs on connection `i % count` of its load's
/// transport. gRPC callers multiplex on one connection per app; each HTTP/1.1 caller has a connection of its own.
struct BenchConnections: Sendable {
    var grpc: [GRPCClientConnection]
    var http: [HTTPClientConnection]
    /// The distinct apps (sockets) those connections reach.
    var apps: Int

    func count(_ transport: BenchTransport) -> Int {
        switch transport {
        case .grpc: grpc.count
        case .http: http.count
        }
    }
}
