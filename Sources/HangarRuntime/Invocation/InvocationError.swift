public import NIOCore

/// Service invocation's refusals and failures, with Dapr's codes (`ERR_DIRECT_INVOKE`, `ERR_PERMISSION_DENIED`).
public enum InvocationError {
    public static let errorCode = "ERR_DIRECT_INVOKE"

    static func invalidTarget(_ target: String, _ why: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .invalidArgument, httpStatus: 400,
            message: "invalid app id '\(target.prefix(128))': \(why)", reason: "HANGAR_INVALID_APP_ID")
    }

    static func invalidMethod(_ method: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .invalidArgument, httpStatus: 400,
            message: "invalid method: \(method.prefix(128).debugDescription)", reason: "HANGAR_INVALID_METHOD")
    }

    static func notFound(_ target: AppID) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .notFound, httpStatus: 404,
            message: "failed to invoke, id: \(target.appId), err: no app '\(target.appId)' in namespace "
                + "'\(target.namespace)'",
            reason: "HANGAR_APP_NOT_FOUND", metadata: ["namespace": target.namespace, "appId": target.appId])
    }

    static func noChannel(_ target: AppID) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .notFound, httpStatus: 404,
            message: "failed to invoke, id: \(target.appId), err: app \(target) declares no appChannel, so it "
                + "cannot be invoked (see tenancy/README.md)",
            reason: "HANGAR_NO_APP_CHANNEL", metadata: ["namespace": target.namespace, "appId": target.appId])
    }

    static func denied(caller: AppID, target: AppID, method: String) -> APIError {
        APIError(
            errorCode: "ERR_PERMISSION_DENIED", rpcCode: .permissionDenied, httpStatus: 403,
            message: "app \(caller) may not invoke '\(method.prefix(128))' on app \(target): calls across namespaces "
                + "are denied unless tenant '\(target.namespace)' allows them (spec.allowInvocationFrom)",
            reason: "HANGAR_INVOCATION_DENIED",
            metadata: [
                "callerNamespace": caller.namespace, "callerAppId": caller.appId, "namespace": target.namespace,
                "appId": target.appId,
            ])
    }

    static func unhealthy(_ target: AppID) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .unavailable, httpStatus: 500,
            message: "failed to invoke, id: \(target.appId), err: app is not in a healthy state",
            reason: "HANGAR_APP_UNHEALTHY", metadata: ["namespace": target.namespace, "appId": target.appId])
    }

    static func failed(_ target: AppID, _ error: AppChannelError) -> APIError {
        let (code, status): (RPCCode, Int) =
            switch error {
            case .deadlineExceeded: (.deadlineExceeded, 504)
            case .invalidRequest: (.invalidArgument, 400)
            case .tooLarge: (.resourceExhausted, 500)
            case .cancelled: (.cancelled, 499)
            default: (.unavailable, 500)
            }
        return APIError(
            errorCode: errorCode, rpcCode: code, httpStatus: status,
            message: "failed to invoke, id: \(target.appId), err: \(error)",
            reason: "HANGAR_APP_UNREACHABLE", metadata: ["namespace": target.namespace, "appId": target.appId])
    }
}

extension InvocationError {
    static let reasonPhrases: [Int: String] = [
        300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 304: "Not Modified", 400: "Bad Request",
        401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
        409: "Conflict", 410: "Gone", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
        422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented",
        502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    ]

    /// What a gRPC caller gets when an HTTP callee answered outside 2xx: Dapr's `CodeFromHTTPStatus`, the status
    /// text as the message, and the first 63 bytes of the body in the ErrorInfo (the body itself is lost, as in Dapr).
    public static func httpStatus(_ status: Int, body: ByteBuffer) -> APIError {
        let code: RPCCode =
            switch status {
            case 400: .internal
            case 401: .unauthenticated
            case 403: .permissionDenied
            case 404: .notFound
            case 409: .alreadyExists
            case 429: .resourceExhausted
            case 501: .unimplemented
            case 503: .unavailable
            case 504: .deadlineExceeded
            default: .unknown
            }
        let text = reasonPhrases[status] ?? "HTTP \(status)"
        return APIError(
            errorCode: "", rpcCode: code, httpStatus: status, message: text, reason: text,
            metadata: [
                "http.code": String(status), "http.error_message": String(decoding: body.readableBytesView.prefix(63), as: UTF8.self),
            ])
    }
}

/// The callee answered with a gRPC error status: a gRPC caller gets that status as it is; an HTTP caller gets the
/// status Dapr maps it to and the status as JSON.
public struct AppCalleeError: DaprAPIError {
    public let rpcCode: RPCCode
    public let message: String
    public var errorCode: String { "" }
    public var reason: String { "" }

    public init(code: RPCCode, message: String) {
        self.rpcCode = code
        self.message = message
    }

    /// Dapr's `HTTPStatusFromCode`.
    public var httpStatus: Int {
        switch rpcCode {
        case .ok: 200
        case .cancelled: 499
        case .invalidArgument, .failedPrecondition, .outOfRange: 400
        case .deadlineExceeded: 504
        case .notFound: 404
        case .alreadyExists, .aborted: 409
        case .permissionDenied: 403
        case .resourceExhausted: 429
        case .unimplemented: 501
        case .unavailable: 503
        case .unauthenticated: 401
        case .unknown, .internal, .dataLoss: 500
        }
    }
}
