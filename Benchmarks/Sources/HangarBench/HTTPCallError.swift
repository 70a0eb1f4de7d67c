/// Why an HTTP/1.1 call did not return what the bench expected.
enum HTTPCallError: Error, CustomStringConvertible {
    /// The server answered with another status than the one expected; the start of its body.
    case status(Int, String)
    /// The server answered with the expected status but another body.
    case unexpectedBody(String)
    /// The server answered with something this client does not read (not HTTP/1.1, no `content-length`, chunked).
    case protocolViolation(String)
    /// The connection closed before the response, or a call was started while another was in flight.
    case closed

    var description: String {
        switch self {
        case .status(let status, let body): "HTTP status \(status): \(body)"
        case .unexpectedBody(let body): "unexpected body: \(body)"
        case .protocolViolation(let message): "protocol violation: \(message)"
        case .closed: "connection closed before the response"
        }
    }
}

extension HTTPCallError: UnaryCallFailure {
    var isAnswer: Bool {
        switch self {
        case .status, .unexpectedBody: true
        case .protocolViolation, .closed: false
        }
    }
}
