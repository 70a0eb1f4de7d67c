import Foundation
import HangarComponents
package import HangarRuntime
import NIOCore
import SwiftProtobuf

/// `dapr.proto.runtime.v1.Dapr` on the gRPC front-end: translates protobuf messages to runtime calls and back.
/// No Dapr semantics live here; they are in the runtime's building blocks, shared with the HTTP front-end.
package enum DaprService {
    static let prefix = "/dapr.proto.runtime.v1.Dapr/"

    package static func make(runtime: Runtime) -> GRPCService {
        var service = GRPCService()
        registerState(&service, runtime.state)
        registerMetadata(&service, runtime.metadata)
        return service
    }

    static func concurrency(_ item: Dapr_Proto_Common_V1_StateItem) -> StateConcurrency {
        guard item.hasOptions else { return .unspecified }
        switch item.options.concurrency {
        case .concurrencyFirstWrite: return .firstWrite
        case .concurrencyLastWrite: return .lastWrite
        default: return .unspecified
        }
    }

    static func item(_ item: Dapr_Proto_Common_V1_StateItem) -> StateItemRequest {
        StateItemRequest(
            key: item.key, value: item.value, etag: item.hasEtag ? item.etag.value : nil, metadata: item.metadata,
            concurrency: concurrency(item))
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
            var concurrency = StateConcurrency.unspecified
            if request.hasOptions {
                switch request.options.concurrency {
                case .concurrencyFirstWrite: concurrency = .firstWrite
                case .concurrencyLastWrite: concurrency = .lastWrite
                default: break
                }
            }
            let item = StateItemRequest(
                key: request.key, etag: request.hasEtag ? request.etag.value : nil, metadata: request.metadata,
                concurrency: concurrency)
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

    static func registerMetadata(_ service: inout GRPCService, _ metadata: MetadataAPI) {
        service.unary(prefix + "GetMetadata", Dapr_Proto_Runtime_V1_GetMetadataRequest.self) { _, call in
            let info = metadata.get(call.caller)
            var response = Dapr_Proto_Runtime_V1_GetMetadataResponse()
            response.id = info.id
            response.runtimeVersion = info.runtimeVersion
            response.extendedMetadata = info.extended
            response.enabledFeatures = info.enabledFeatures
            response.registeredComponents = info.components.map { component in
                var registered = Dapr_Proto_Runtime_V1_RegisteredComponents()
                registered.name = component.name
                registered.type = component.type
                registered.version = component.version
                registered.capabilities = component.capabilities
                return registered
            }
            return .success(response)
        }
        service.unary(prefix + "SetMetadata", Dapr_Proto_Runtime_V1_SetMetadataRequest.self) { request, call in
            Eventual {
                try metadata.set(call.caller, key: request.key, value: request.value)
                return Google_Protobuf_Empty()
            }
        }
        service.unary(prefix + "Shutdown", Dapr_Proto_Runtime_V1_ShutdownRequest.self) { _, call in
            // The node closes the app's listeners asynchronously, letting calls in flight (this one too) finish.
            metadata.shutdown(call.caller)
            return .success(Google_Protobuf_Empty())
        }
    }
}
