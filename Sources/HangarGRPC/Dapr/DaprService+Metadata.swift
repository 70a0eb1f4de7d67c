import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import SwiftProtobuf

extension DaprService {
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
            response.subscriptions = info.subscriptions.map { subscription in
                var listed = Dapr_Proto_Runtime_V1_PubsubSubscription()
                listed.pubsubName = subscription.pubsubName
                listed.topic = subscription.topic
                listed.metadata = subscription.metadata
                listed.deadLetterTopic = subscription.deadLetterTopic
                listed.rules.rules = subscription.rules.map { rule in
                    var listed = Dapr_Proto_Runtime_V1_PubsubSubscriptionRule()
                    listed.match = rule.match
                    listed.path = rule.path
                    return listed
                }
                listed.type =
                    switch subscription.kind {
                    case .declarative: .declarative
                    case .programmatic: .programmatic
                    case .streaming: .streaming
                    }
                return listed
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
