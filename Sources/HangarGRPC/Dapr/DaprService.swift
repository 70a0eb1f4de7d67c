import HangarComponents
package import HangarRuntime
import NIOCore
import SwiftProtobuf

/// `dapr.proto.runtime.v1.Dapr` on the gRPC front-end: translates protobuf messages to runtime calls and back.
/// No Dapr semantics live here; they are in the runtime's building blocks, shared with the HTTP front-end. Each
/// building block registers its methods from its own file (`DaprService+<Block>.swift`).
package enum DaprService {
    static let prefix = "/dapr.proto.runtime.v1.Dapr/"

    package static func make(runtime: Runtime) -> GRPCService {
        var service = GRPCService()
        registerState(&service, runtime.state)
        registerPubSub(&service, runtime.pubsub)
        registerSecrets(&service, runtime.secrets)
        registerSubscribe(&service, runtime.pubsub, logger: runtime.logger)
        registerMetadata(&service, runtime.metadata)
        registerInvoke(&service, runtime.invocation)
        registerProxy(&service, runtime.invocation)
        return service
    }
}
