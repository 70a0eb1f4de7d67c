import NIOCore
import NIOHPACK

/// One pre-encoded unary gRPC call: the method's request HEADERS (built once per method) and the length-prefixed
/// message.
struct GRPCClientRequest: Sendable {
    var headers: HPACKHeaders
    var message: ByteBuffer

    init(headers: HPACKHeaders, message: ByteBuffer) {
        self.headers = headers
        self.message = message
    }

    init(path: String, message: ByteBuffer) {
        self.init(headers: GRPCClientHandler.requestHeaders(path: path), message: message)
    }

    /// `messages` to the one method at `path`, sharing its HEADERS.
    static func batch(path: String, _ messages: [ByteBuffer]) -> [GRPCClientRequest] {
        let headers = GRPCClientHandler.requestHeaders(path: path)
        return messages.map { GRPCClientRequest(headers: headers, message: $0) }
    }
}

extension GRPCClientHandler: UnaryClientHandler {
    func call(_ request: GRPCClientRequest, completion: @escaping Completion) {
        call(headers: request.headers, message: request.message, completion: completion)
    }
}

extension GRPCCallError: UnaryCallFailure {
    var isAnswer: Bool {
        if case .status = self { return true }
        return false
    }
}
