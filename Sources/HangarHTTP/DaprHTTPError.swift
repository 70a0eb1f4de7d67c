import Foundation
import HangarRuntime
import Hummingbird

/// Turns every error a route throws into Dapr's HTTP error shape, `{"errorCode", "message"}` with the status the
/// error carries, so that no front-end code decides status codes by itself.
struct DaprErrorMiddleware: RouterMiddleware {
    typealias Context = HangarRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as any DaprAPIError {
            return Self.response(error)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            return Self.response(
                RequestError.tooLarge(0, limit: 0).withMessage("the request body is too large"))
        } catch let error as HTTPError where error.status == .notFound {
            return Self.response(
                APIError(
                    errorCode: "ERR_NOT_FOUND", rpcCode: .notFound, httpStatus: 404,
                    message: "no route for \(request.method) \(request.uri.path)", reason: "HANGAR_ROUTE_NOT_FOUND"))
        } catch let error as HTTPError {
            return Self.response(
                APIError(
                    errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: Int(error.status.code),
                    message: error.body ?? "\(error.status)", reason: "DAPR_MALFORMED_REQUEST"))
        } catch {
            return Self.response(RequestError.internal("\(error)"))
        }
    }

    static func response(_ error: any DaprAPIError) -> Response {
        var body: [String: Any] = ["errorCode": error.errorCode, "message": error.message]
        var info: [String: Any] = [
            "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": error.reason, "domain": "dapr.io",
        ]
        if !error.errorMetadata.isEmpty { info["metadata"] = error.errorMetadata }
        body["details"] = [info]
        let data =
            (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data()
        var headers: HTTPFields = [.contentType: "application/json"]
        if error.httpStatus == 429 { headers[.retryAfter] = error.errorMetadata["retryAfterSeconds"] ?? "1" }
        return Response(
            status: .init(code: error.httpStatus), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

extension APIError {
    func withMessage(_ message: String) -> APIError {
        APIError(
            errorCode: errorCode, rpcCode: rpcCode, httpStatus: httpStatus, message: message, reason: reason,
            metadata: [:])
    }
}
