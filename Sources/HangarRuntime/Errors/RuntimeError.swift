/// The gRPC status codes the runtime reports. Front-ends map them to the wire; nothing else does.
package enum RPCCode: Int, Sendable, Hashable {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16
}

/// An error of a building block, as Dapr reports it: an `ERR_*` code, a gRPC code and an HTTP status together, and
/// a `google.rpc.ErrorInfo` reason. Each building block has one type conforming to this; front-ends map any of them.
package protocol DaprAPIError: Error, Sendable, CustomStringConvertible {
    /// Dapr's `errorCode`, e.g. `ERR_STATE_STORE_NOT_FOUND`.
    var errorCode: String { get }
    var rpcCode: RPCCode { get }
    var httpStatus: Int { get }
    var message: String { get }
    /// `ErrorInfo.reason`, e.g. `DAPR_STATE_NOT_FOUND`.
    var reason: String { get }
    /// `ErrorInfo.metadata`.
    var errorMetadata: [String: String] { get }
}

extension DaprAPIError {
    package var errorMetadata: [String: String] { [:] }
    package var description: String { "\(errorCode): \(message)" }
}

/// The one concrete shape every building block's error takes; the per-block types build these.
package struct APIError: DaprAPIError, Hashable {
    package let errorCode: String
    package let rpcCode: RPCCode
    package let httpStatus: Int
    package let message: String
    package let reason: String
    package let errorMetadata: [String: String]

    package init(
        errorCode: String, rpcCode: RPCCode, httpStatus: Int, message: String, reason: String,
        metadata: [String: String] = [:]
    ) {
        self.errorCode = errorCode
        self.rpcCode = rpcCode
        self.httpStatus = httpStatus
        self.message = message
        self.reason = reason
        self.errorMetadata = metadata
    }
}

/// Errors of the gate and of requests that are malformed before any building block sees them.
package enum RequestError {
    package static func unauthenticated() -> APIError {
        APIError(
            errorCode: "ERR_UNAUTHENTICATED", rpcCode: .unauthenticated, httpStatus: 401,
            message: "invalid api token", reason: "DAPR_API_TOKEN_INVALID")
    }

    package static func detached(_ app: AppID) -> APIError {
        APIError(
            errorCode: "ERR_APP_DETACHED", rpcCode: .unavailable, httpStatus: 503,
            message: "app \(app) has been shut down and is detached from this node",
            reason: "HANGAR_APP_DETACHED")
    }

    package static func removed(_ app: AppID) -> APIError {
        APIError(
            errorCode: "ERR_APP_REMOVED", rpcCode: .unavailable, httpStatus: 503,
            message: "app \(app) is not (or no longer) declared in this node's tenancy configuration",
            reason: "HANGAR_APP_REMOVED")
    }

    package static func tooLarge(_ size: Int, limit: Int) -> APIError {
        APIError(
            errorCode: "ERR_REQUEST_TOO_LARGE", rpcCode: .resourceExhausted, httpStatus: 413,
            message: "request of \(size) bytes exceeds the maximum of \(limit) bytes",
            reason: "HANGAR_REQUEST_TOO_LARGE", metadata: ["limit": String(limit)])
    }

    package static func malformed(_ message: String) -> APIError {
        APIError(
            errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
            message: message, reason: "DAPR_MALFORMED_REQUEST")
    }

    package static func unimplemented(_ what: String) -> APIError {
        APIError(
            errorCode: "ERR_NOT_IMPLEMENTED", rpcCode: .unimplemented, httpStatus: 501,
            message: "\(what) is not implemented by Hangar", reason: "HANGAR_NOT_IMPLEMENTED")
    }

    package static func `internal`(_ message: String) -> APIError {
        APIError(
            errorCode: "ERR_INTERNAL", rpcCode: .internal, httpStatus: 500, message: message,
            reason: "HANGAR_INTERNAL")
    }
}
