import HangarComponents
import HangarRuntime

extension DaprHTTPAPI {
    /// The secrets API, on the runtime's `SecretsAPI` (shared with the gRPC front-end). `metadata.<name>` query
    /// parameters are passed to the store, as in Dapr.
    static var secrets: [Route] {
        [
            Route(.GET, "/v1.0/secrets/{store}/bulk", name: "GetBulkSecret", .call(bulkGetSecret)),
            Route(.GET, "/v1.0/secrets/{store}/{key}", name: "GetSecret", .call(getSecret)),
        ]
    }

    private static func getSecret(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let secret = try request.runtime.secrets.get(
            request.caller, store: request.parameters["store"], name: request.parameters["key"],
            metadata: request.target.metadata)
        return .success(try DaprHTTPJSON.response(secret))
    }

    private static func bulkGetSecret(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let secrets = try request.runtime.secrets.bulkGet(
            request.caller, store: request.parameters["store"], metadata: request.target.metadata)
        return .success(try DaprHTTPJSON.response(secrets))
    }
}
