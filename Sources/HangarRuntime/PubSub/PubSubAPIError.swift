import HangarComponents

/// The pub/sub building block's errors, with Dapr's codes, statuses, messages and `ErrorInfo` reasons
/// (`pkg/api/errors/pubsub.go`, `pkg/messages/errorcodes`).
package enum PubSubAPIError {
    /// The caller may use no pub/sub component at all.
    package static func notConfigured(_ name: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_NOT_CONFIGURED", rpcCode: .failedPrecondition, httpStatus: 400,
            message: "pubsub \(name) is not configured", reason: "DAPR_PUBSUB_NOT_CONFIGURED")
    }

    package static func nameEmpty() -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_EMPTY", rpcCode: .invalidArgument, httpStatus: 404, message: "pubsub name is empty",
            reason: "DAPR_PUBSUB_NAME_EMPTY")
    }

    /// No pub/sub component by that name is visible to the caller (absent, another tenant's, out of its scopes).
    package static func notFound(_ name: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_NOT_FOUND", rpcCode: .invalidArgument, httpStatus: 404,
            // The name is the caller's: bounded, so that an error about a huge one stays a short message.
            message: "pubsub \(name.count <= 128 ? name : name.prefix(120) + "…") is not found",
            reason: "DAPR_PUBSUB_NOT_FOUND", metadata: ["pubsubName": name])
    }

    package static func topicEmpty(_ pubsub: String) -> APIError {
        APIError(
            errorCode: "ERR_TOPIC_NAME_EMPTY", rpcCode: .invalidArgument, httpStatus: 404,
            message: "topic is empty in pubsub \(pubsub)", reason: "DAPR_PUBSUB_TOPIC_NAME_EMPTY",
            metadata: ["pubsubName": pubsub])
    }

    /// A topic name Hangar refuses (Dapr accepts any): see `TenantPubSubHandle.physicalTopic`.
    package static func invalidTopic(_ topic: String, _ problem: String) -> APIError {
        APIError(
            errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
            message: "topic \(Names.quoted(topic.replacingControlCharacters)) is not a valid topic name: \(problem)",
            reason: "HANGAR_PUBSUB_TOPIC_INVALID")
    }

    /// A metadata value that cannot be read (`rawPayload` not a boolean, a bad TTL).
    package static func metadata(_ pubsub: String, _ problem: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_REQUEST_METADATA", rpcCode: .invalidArgument, httpStatus: 400,
            message: "failed deserializing metadata. Error: \(problem)", reason: "DAPR_PUBSUB_METADATA_DESERIALIZATION",
            metadata: ["pubsubName": pubsub])
    }

    /// The payload claims to be a CloudEvent (`application/cloudevents+json`) but is not one.
    package static func cloudEventCreation(_ pubsub: String, app: AppID, _ problem: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_CLOUD_EVENTS_SER", rpcCode: .invalidArgument, httpStatus: 500,
            message: "cannot create cloudevent", reason: "DAPR_PUBSUB_CLOUD_EVENT_CREATION",
            metadata: ["appID": app.appId, "error": problem, "pubsubName": pubsub])
    }

    /// The component's topic scopes refuse the caller this topic.
    package static func forbidden(_ pubsub: String, topic: String, app: AppID) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_FORBIDDEN", rpcCode: .permissionDenied, httpStatus: 403,
            message: "topic \(topic) is not allowed for app id \(app.appId)", reason: "DAPR_PUBSUB_FORBIDDEN",
            metadata: ["pubsubName": pubsub, "topic": topic])
    }

    /// A bulk entry without an id, or with one given twice.
    package static func entryID(_ pubsub: String, topic: String, app: AppID) -> APIError {
        let problem = "entryId is duplicated or not present for entry"
        return APIError(
            errorCode: "ERR_PUBSUB_EVENTS_SER", rpcCode: .invalidArgument, httpStatus: 400,
            message: "error marshaling events to bytes for topic \(topic) pubsub \(pubsub). error: \(problem)",
            reason: "DAPR_PUBSUB_MARSHAL_EVENTS", metadata: ["appID": app.appId, "error": problem])
    }

    /// An HTTP bulk body that is not a JSON array of entries.
    package static func unmarshalEvents(_ pubsub: String, topic: String, app: AppID, _ problem: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_EVENTS_SER", rpcCode: .invalidArgument, httpStatus: 400,
            message: "error when unmarshaling the request for topic \(topic) pubsub \(pubsub): \(problem)",
            reason: "DAPR_PUBSUB_UNMARSHAL_EVENTS", metadata: ["appID": app.appId])
    }

    /// An HTTP bulk entry whose `event` does not fit its `contentType`.
    package static func marshalEnvelope(_ pubsub: String, topic: String, app: AppID, _ problem: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_EVENTS_SER", rpcCode: .invalidArgument, httpStatus: 400,
            message: "error when marshalling cloud event envelope for topic \(topic) pubsub \(pubsub): \(problem)",
            reason: "DAPR_PUBSUB_MARSHAL_ENVELOPE", metadata: ["appID": app.appId, "error": problem])
    }

    /// The component exists but is not serving: still initialising, or DOWN after a failed initialisation.
    package static func unavailable(_ health: ComponentHealth) -> APIError {
        .notServing(health, what: "pubsub", errorCode: "ERR_PUBSUB_NOT_READY", nameKey: "pubsubName")
    }

    /// A subscription ended because its component was retired (removed from the configuration, or replaced):
    /// UNAVAILABLE, so that the SDK reconnects (and finds the new component, or why there is none).
    package static func subscriptionEnded(_ pubsub: String, topic: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_NOT_FOUND", rpcCode: .unavailable, httpStatus: 503,
            message: "subscription to topic \(topic) ended: pubsub \(pubsub) was removed or replaced",
            reason: "HANGAR_PUBSUB_SUBSCRIPTION_ENDED", metadata: ["pubsubName": pubsub, "topic": topic])
    }

    /// The component failed the publish. A full component (its own `maxRetainedBytes`, the node operator's limit)
    /// is RESOURCE_EXHAUSTED / 429 so that publishers back off; a closed one (being replaced) is UNAVAILABLE, and so
    /// is one whose backend cannot be reached (with HTTP 500, as Dapr).
    package static func publish(_ error: any Error, pubsub: String, topic: String) -> APIError {
        if let error = error as? APIError { return error }
        let pubsubError = PubSubError.from(error)
        let message = "error when publishing to topic \(topic) in pubsub \(pubsub): \(pubsubError)"
        let metadata = ["pubsubName": pubsub, "topic": topic, "error": "\(pubsubError)"]
        let (code, status): (RPCCode, Int) =
            switch pubsubError {
            case .full, .partitionFull: (.resourceExhausted, 429)
            // Retrying cannot help: no retryAfterSeconds.
            case .tooLarge: (.resourceExhausted, 413)
            case .closed: (.unavailable, 503)
            // Dapr answers 500 for any publish its component failed; gRPC says the backend is unreachable.
            case .unavailable: (.unavailable, 500)
            default: (.internal, 500)
            }
        return APIError(
            errorCode: "ERR_PUBSUB_PUBLISH_MESSAGE", rpcCode: code, httpStatus: status, message: message,
            reason: "DAPR_PUBSUB_PUBLISH_MESSAGE",
            metadata: status == 429 ? metadata.merging(["retryAfterSeconds": "1"]) { $1 } : metadata)
    }
}

/// A bulk publish that failed after its entries were accepted: the error, and every entry that was not published
/// (all of them: a component publishes a batch all or none). gRPC answers the error; HTTP answers 500 with
/// `{"failedEntries": [{"entryId", "error"}], "errorCode"}` as Dapr does.
package struct BulkPublishFailure: DaprAPIError {
    package let error: APIError
    package let failedEntries: [(entryId: String, error: String)]

    package var errorCode: String { error.errorCode }
    package var rpcCode: RPCCode { error.rpcCode }
    package var httpStatus: Int { error.httpStatus }
    package var message: String { error.message }
    package var reason: String { error.reason }
    package var errorMetadata: [String: String] { error.errorMetadata }
}

extension String {
    /// The string with control characters shown as `\u{..}`, for error messages quoting what a caller sent.
    var replacingControlCharacters: String {
        guard unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else {
            return self
        }
        var text = ""
        for scalar in unicodeScalars {
            if scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) {
                text += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                text.unicodeScalars.append(scalar)
            }
        }
        return text
    }
}
