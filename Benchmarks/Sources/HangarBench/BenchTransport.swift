/// How the bench client reaches a server: gRPC over HTTP/2, or Dapr's HTTP API over HTTP/1.1.
enum BenchTransport: String, Codable, Sendable {
    case grpc
    case http
}
