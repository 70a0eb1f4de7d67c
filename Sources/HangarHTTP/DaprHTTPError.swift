import Foundation
import HangarRuntime
import NIOCore
import NIOHTTP1

/// Dapr's HTTP error shape, `{"errorCode", "message", "details": [ErrorInfo]}` with the status the error carries,
/// so that no route decides status codes by itself.
enum DaprHTTPError {
    static func response(_ error: any Error) -> HTTPResponse {
        response(error as? any DaprAPIError ?? RequestError.internal("\(error)"))
    }

    static func response(_ error: any DaprAPIError) -> HTTPResponse {
        if let callee = error as? AppCalleeError {
            // An invoked gRPC app's error status: the HTTP status Dapr maps its code to, and the status as JSON
            // (protojson of google.rpc.Status), as Dapr answers.
            let body: [String: Any] = ["code": callee.rpcCode.rawValue, "message": callee.message, "details": []]
            let data =
                (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
                ?? Data()
            return HTTPResponse(
                status: HTTPResponseStatus(statusCode: callee.httpStatus), headers: ["content-type": "application/json"],
                body: ByteBuffer(bytes: data))
        }
        if let failure = error as? BulkPublishFailure { return bulkPublishFailure(failure) }
        var body: [String: Any] = ["errorCode": error.errorCode, "message": error.message]
        var info: [String: Any] = [
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.reason, "domain": "dapr.io",
        ]
        if !error.errorMetadata.isEmpty { info["metadata"] = error.errorMetadata }
        body["details"] = [info]
        let data =
            (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        var headers: HTTPHeaders = ["content-type": "application/json"]
        if error.httpStatus == 429 {
            headers.add(name: "retry-after", value: error.errorMetadata["retryAfterSeconds"] ?? "1")
        }
        return HTTPResponse(
            status: HTTPResponseStatus(statusCode: error.httpStatus), headers: headers, body: ByteBuffer(bytes: data))
    }

    /// A bulk publish the component failed, as Dapr answers it: the error's status with
    /// `{"failedEntries": [{"entryId", "error"}], "errorCode"}`, the same JSON in the `metadata.responseData` header
    /// and the error in `metadata.error`.
    static func bulkPublishFailure(_ failure: BulkPublishFailure) -> HTTPResponse {
        let body: [String: Any] = [
            "failedEntries": failure.failedEntries.map { ["entryId": $0.entryId, "error": $0.error] },
            "errorCode": failure.errorCode,
        ]
        let data =
            (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        var headers: HTTPHeaders = ["content-type": "application/json"]
        for (name, value) in [
            ("metadata.responseData", String(decoding: data, as: UTF8.self)), ("metadata.error", failure.description),
        ] where HTTPHeaderField.isValidValue(value) {
            headers.add(name: name, value: value)
        }
        if failure.httpStatus == 429 {
            headers.add(name: "retry-after", value: failure.errorMetadata["retryAfterSeconds"] ?? "1")
        }
        return HTTPResponse(
            status: HTTPResponseStatus(statusCode: failure.httpStatus), headers: headers, body: ByteBuffer(bytes: data))
    }

    static let notFoundReason = "HANGAR_ROUTE_NOT_FOUND"

    /// A request that no route matches and that names no target app. Dapr's invocation endpoint is its router's
    /// fallback, so this is its answer for such a request: 404 `ERR_DIRECT_INVOKE`, with its message; the method and
    /// path are in the ErrorInfo.
    static func notFound(_ method: HTTPMethod, _ path: Substring) -> APIError {
        APIError(
            errorCode: "ERR_DIRECT_INVOKE", rpcCode: .notFound, httpStatus: 404,
            message: "failed getting app id either from the URL path or the header dapr-app-id",
            reason: notFoundReason, metadata: ["method": "\(method)", "path": RequestError.quotedPath(path)])
    }
}

extension RequestError {
    /// A request path as error messages quote it: at most 128 characters.
    static func quotedPath(_ path: Substring) -> String {
        path.count <= 128 ? String(path) : String(path.prefix(128)) + "…"
    }
}
