package import NIOCore

/// Service invocation's refusals and failures, with Dapr's codes (`ERR_DIRECT_INVOKE`, `ERR_PERMISSION_DENIED`).
package enum InvocationError {
    package static let errorCode = "ERR_DIRECT_INVOKE"

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

    /// The callee's Configuration denies the call. The text is Dapr's: its HTTP API answers 403 with
    /// `ERR_DIRECT_INVOKE` and this message wrapping the callee's PERMISSION_DENIED; gRPC proxying answers the bare
    /// PERMISSION_DENIED.
    static func accessDenied(target: AppID, proxied: Bool, caller: String, operation: String, verb: String)
        -> APIError
    {
        let denial = "access control policy has denied access to id: \(caller) operation: \(operation.prefix(256)) "
            + "verb: \(verb)"
        return APIError(
            errorCode: errorCode, rpcCode: .permissionDenied, httpStatus: 403,
            message: proxied
                ? denial
                : "failed to invoke, id: \(target.appId), err: rpc error: code = PermissionDenied desc = \(denial)",
            reason: "HANGAR_ACCESS_CONTROL_DENIED", metadata: ["namespace": target.namespace, "appId": target.appId])
    }

    /// The callee's Configuration cannot be applied (invalid with no last good version, or not found): calls into
    /// it are refused rather than let through unguarded.
    static func accessUnusable(_ target: AppID, _ why: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: .permissionDenied, httpStatus: 403,
            message: "failed to invoke, id: \(target.appId), err: the access control of app \(target) cannot be "
                + "applied, so calls into it are refused: \(why)",
            reason: "HANGAR_ACCESS_CONTROL_UNUSABLE", metadata: ["namespace": target.namespace, "appId": target.appId])
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
    /// Go's `http.StatusText`, which Dapr uses as the message of an HTTP callee's error status.
    static let reasonPhrases: [Int: String] = [
        100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints", 200: "OK",
        201: "Created", 202: "Accepted", 203: "Non-Authoritative Information", 204: "No Content",
        205: "Reset Content", 206: "Partial Content", 207: "Multi-Status", 208: "Already Reported", 226: "IM Used",
        300: "Multiple Choices", 301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
        305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
        401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
        406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
        410: "Gone", 411: "Length Required", 412: "Precondition Failed", 413: "Request Entity Too Large",
        414: "Request URI Too Long", 415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
        417: "Expectation Failed", 418: "I'm a teapot", 421: "Misdirected Request", 422: "Unprocessable Entity",
        423: "Locked", 424: "Failed Dependency", 425: "Too Early", 426: "Upgrade Required",
        428: "Precondition Required", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
        451: "Unavailable For Legal Reasons", 500: "Internal Server Error", 501: "Not Implemented",
        502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
        506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected", 510: "Not Extended",
        511: "Network Authentication Required",
    ]

    /// What a gRPC caller gets when an HTTP callee answered outside 2xx: Dapr's `CodeFromHTTPStatus`, the status
    /// text as the message, and the first 63 bytes of the body in the ErrorInfo (the body itself is lost, as in Dapr).
    package static func httpStatus(_ status: Int, body: ByteBuffer) -> APIError {
        let code: RPCCode =
            switch status {
            case 408: .cancelled
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
        let text = reasonPhrases[status] ?? ""
        return APIError(
            errorCode: "", rpcCode: code, httpStatus: status, message: text, reason: text,
            metadata: [
                "http.code": String(status), "http.error_message": String(decoding: body.readableBytesView.prefix(63), as: UTF8.self),
            ])
    }
}

/// The callee answered with a gRPC error status: a gRPC caller gets that status as it is; an HTTP caller gets the
/// status Dapr maps it to and the status as JSON.
package struct AppCalleeError: DaprAPIError {
    package let rpcCode: RPCCode
    package let message: String
    package var errorCode: String { "" }
    package var reason: String { "" }

    package init(code: RPCCode, message: String) {
        self.rpcCode = code
        self.message = message
    }

    /// Dapr's `HTTPStatusFromCode`.
    package var httpStatus: Int {
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
