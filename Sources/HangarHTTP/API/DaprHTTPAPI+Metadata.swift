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
        var body: [String: Any] = [
            "id": info.id,
            "runtimeVersion": info.runtimeVersion,
            "components": info.components.map {
                ["name": $0.name, "type": $0.type, "version": $0.version, "capabilities": $0.capabilities]
                    as [String: Any]
            },
            "extended": info.extended,
            "enabledFeatures": info.enabledFeatures,
        ]
        if !info.subscriptions.isEmpty {
            // Dapr's keys (pkg/http metadataResponsePubsubSubscription): `rules` flat, empty fields left out as its
            // omitempty tags say, `deadLetterTopic` and `type` always present.
            body["subscriptions"] = info.subscriptions.map { subscription -> [String: Any] in
                var object: [String: Any] = [
                    "pubsubname": subscription.pubsubName, "topic": subscription.topic,
                    "deadLetterTopic": subscription.deadLetterTopic, "type": subscription.kind.rawValue,
                ]
                if !subscription.metadata.isEmpty { object["metadata"] = subscription.metadata }
                if !subscription.rules.isEmpty {
                    object["rules"] = subscription.rules.map { rule -> [String: String] in
                        var object: [String: String] = [:]
                        if !rule.match.isEmpty { object["match"] = rule.match }
                        if !rule.path.isEmpty { object["path"] = rule.path }
                        return object
                    }
                }
                return object
            }
        }
        return .success(try DaprHTTPJSON.response(body))
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
