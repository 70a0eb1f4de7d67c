import HangarComponents
import HangarRuntime

extension DaprService {
    static func registerSecrets(_ service: inout GRPCService, _ secrets: SecretsAPI) {
        service.unary(prefix + "GetSecret", Dapr_Proto_Runtime_V1_GetSecretRequest.self) { request, call in
            .ready(
                Result {
                    var response = Dapr_Proto_Runtime_V1_GetSecretResponse()
                    response.data = try secrets.get(
                        call.caller, store: request.storeName, name: request.key, metadata: request.metadata)
                    return response
                })
        }
        service.unary(prefix + "GetBulkSecret", Dapr_Proto_Runtime_V1_GetBulkSecretRequest.self) { request, call in
            .ready(
                Result {
                    var response = Dapr_Proto_Runtime_V1_GetBulkSecretResponse()
                    let found = try secrets.bulkGet(call.caller, store: request.storeName, metadata: request.metadata)
                    response.data = found.mapValues { pairs in
                        var secret = Dapr_Proto_Runtime_V1_SecretResponse()
                        secret.secrets = pairs
                        return secret
                    }
                    return response
                })
        }
    }
}
