import NIOCore

/// One pre-encoded HTTP/1.1 request (request line, headers and body, as written to the socket) and what its
/// response must be for the call to count as a success.
struct HTTPClientRequest: Sendable {
    var bytes: ByteBuffer
    var expectedStatus: Int
    /// The exact response body expected, or nil to accept any.
    var expectedBody: ByteBuffer?

    /// `method path` with a `host` header, and a body with its `content-type` and `content-length` when given.
    init(
        method: String, path: String, contentType: String? = nil, body: String? = nil, expectedStatus: Int,
        expectedBody: String? = nil
    ) {
        var head = "\(method) \(path) HTTP/1.1\r\nhost: localhost\r\n"
        if let contentType { head += "content-type: \(contentType)\r\n" }
        if let body { head += "content-length: \(body.utf8.count)\r\n" }
        head += "\r\n"
        self.bytes = ByteBuffer(string: head + (body ?? ""))
        self.expectedStatus = expectedStatus
        self.expectedBody = expectedBody.map { ByteBuffer(string: $0) }
    }
}
