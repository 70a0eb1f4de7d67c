/// Why a unary call did not return a message.
enum GRPCCallError: Error, CustomStringConvertible {
    /// The server answered with a non-zero `grpc-status`.
    case status(Int, String)
    /// The server answered with something that is not a gRPC response.
    case protocolViolation(String)
    /// The stream was reset or the connection closed before the call finished.
    case closed

    var description: String {
        switch self {
        case .status(let code, let message): "grpc-status \(code): \(message)"
        case .protocolViolation(let message): "protocol violation: \(message)"
        case .closed: "stream or connection closed before the response"
        }
    }
}
