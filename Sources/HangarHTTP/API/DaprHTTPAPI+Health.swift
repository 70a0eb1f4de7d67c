import HangarRuntime
import NIOHTTP1

extension DaprHTTPAPI {
    /// `GET /v1.0/healthz` and `/v1.0/healthz/outbound`: no token needed (the SDK probes `/healthz/outbound` before
    /// it has a connection). 204 once every listener is up and every component has made its first initialisation
    /// attempt, 500 before, as in Dapr. A DOWN component does not fail it: the node serves its other tenants.
    static var health: [Route] {
        [
            Route(.GET, "/v1.0/healthz", name: "Healthz", .atHead { readiness($0.runtime, outbound: false) }),
            Route(.GET, "/v1.0/healthz/outbound", name: "Healthz", .atHead { readiness($0.runtime, outbound: true) }),
        ]
    }

    private static func readiness(_ runtime: Runtime, outbound: Bool) -> HTTPResponse {
        guard runtime.health.isReady else {
            return DaprHTTPError.response(
                APIError(
                    errorCode: outbound ? "ERR_OUTBOUND_HEALTH_NOT_READY" : "ERR_HEALTH_NOT_READY",
                    rpcCode: .unavailable, httpStatus: 500,
                    message: "\(outbound ? "dapr outbound" : "dapr") is not ready", reason: "HANGAR_NOT_READY"))
        }
        return HTTPResponse(status: .noContent)
    }
}
