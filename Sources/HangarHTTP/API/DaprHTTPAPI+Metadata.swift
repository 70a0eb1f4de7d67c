import HangarComponents
import HangarRuntime
import NIOHTTP1

extension DaprHTTPAPI {
    /// The metadata API and `Shutdown` (which detaches only the calling app).
    static var metadata: [Route] {
        [
            Route(.GET, "/v1.0/metadata", name: "GetMetadata", .call(getMetadata)),
            Route(.PUT, "/v1.0/metadata/{key}", name: "SetMetadata", .call(setMetadata)),
            Route([.POST, .PUT], "/v1.0/shutdown", name: "Shutdown", .call(shutdown)),
        ]
    }

    private static func getMetadata(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let info = request.runtime.metadata.get(request.caller)
        return .success(
            try DaprHTTPJSON.response([
                "id": info.id,
                "runtimeVersion": info.runtimeVersion,
                "components": info.components.map {
                    ["name": $0.name, "type": $0.type, "version": $0.version, "capabilities": $0.capabilities]
                        as [String: Any]
                },
                "extended": info.extended,
                "enabledFeatures": info.enabledFeatures,
            ]))
    }

    private static func setMetadata(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        try request.runtime.metadata.set(
            request.caller, key: request.parameters["key"], value: String(buffer: request.body))
        return .success(DaprHTTPJSON.noContent)
    }

    private static func shutdown(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        // The node closes the app's listeners asynchronously, letting calls in flight (this one too) finish.
        request.runtime.metadata.shutdown(request.caller)
        return .success(DaprHTTPJSON.noContent)
    }
}
