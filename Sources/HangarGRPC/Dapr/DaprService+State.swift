import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import SwiftProtobuf

extension DaprService {
    /// The concurrency a request's `options` ask for (unspecified when it has none).
    static func concurrency(_ options: Dapr_Proto_Common_V1_StateOptions?) -> StateConcurrency {
        switch options?.concurrency {
        case .concurrencyFirstWrite: .firstWrite
        case .concurrencyLastWrite: .lastWrite
        default: .unspecified
        }
    }

    static func item(_ item: Dapr_Proto_Common_V1_StateItem) -> StateItemRequest {
        StateItemRequest(
            key: item.key, value: item.value, etag: item.hasEtag ? item.etag.value : nil, metadata: item.metadata,
            concurrency: concurrency(item.hasOptions ? item.options : nil))
    }

    static func registerState(_ service: inout GRPCService, _ state: StateAPI) {
        service.unary(prefix + "GetState", Dapr_Proto_Runtime_V1_GetStateRequest.self) { request, call in
            state.get(call.caller, store: request.storeName, key: request.key, on: call.eventLoop).map { value in
                var response = Dapr_Proto_Runtime_V1_GetStateResponse()
                if let value {
                    response.data = value.data
                    response.etag = value.etag
                    response.metadata = value.metadata
                }
                return response
            }
        }
        service.unary(prefix + "GetBulkState", Dapr_Proto_Runtime_V1_GetBulkStateRequest.self) { request, call in
            state.bulkGet(call.caller, store: request.storeName, keys: request.keys, on: call.eventLoop).map { values in
                var response = Dapr_Proto_Runtime_V1_GetBulkStateResponse()
                response.items = values.map { value in
                    var item = Dapr_Proto_Runtime_V1_BulkStateItem()
                    item.key = value.key
                    if let found = value.value {
                        item.data = found.data
                        item.etag = found.etag
                        item.metadata = found.metadata
                    }
                    item.error = value.error ?? ""
                    return item
                }
                return response
            }
        }
        service.unary(prefix + "SaveState", Dapr_Proto_Runtime_V1_SaveStateRequest.self) { request, call in
            state.save(call.caller, store: request.storeName, items: request.states.map(item), on: call.eventLoop)
                .map { Google_Protobuf_Empty() }
        }
        service.unary(prefix + "DeleteState", Dapr_Proto_Runtime_V1_DeleteStateRequest.self) { request, call in
            let item = StateItemRequest(
                key: request.key, etag: request.hasEtag ? request.etag.value : nil, metadata: request.metadata,
                concurrency: concurrency(request.hasOptions ? request.options : nil))
            return state.delete(call.caller, store: request.storeName, items: [item], on: call.eventLoop)
                .map { Google_Protobuf_Empty() }
        }
        service.unary(prefix + "DeleteBulkState", Dapr_Proto_Runtime_V1_DeleteBulkStateRequest.self) { request, call in
            state.delete(call.caller, store: request.storeName, items: request.states.map(item), on: call.eventLoop)
                .map { Google_Protobuf_Empty() }
        }
        service.unary(
            prefix + "ExecuteStateTransaction", Dapr_Proto_Runtime_V1_ExecuteStateTransactionRequest.self
        ) { request, call in
            let operations = request.operations.map {
                StateTransactionOperation(operation: $0.operationType, item: item($0.request))
            }
            return state.transact(call.caller, store: request.storeName, operations: operations, on: call.eventLoop)
                .map { Google_Protobuf_Empty() }
        }
    }
}
