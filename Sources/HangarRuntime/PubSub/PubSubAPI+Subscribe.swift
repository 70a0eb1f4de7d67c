package import HangarComponents
package import Logging
package import NIOCore

extension PubSubAPI {
    /// Opens a streaming subscription (`SubscribeTopicEventsAlpha1`) after Dapr's checks of its initial request:
    /// `pubsubName is required` and `topic is required` (UNKNOWN, as Dapr's plain errors), the component
    /// (`pubsub X is not found`, INVALID_ARGUMENT), Hangar's refusal of hostile topic names, then the topic scopes
    /// (`subscriptionScopes`, `allowedTopics`: UNKNOWN `subscription to topic … is not allowed`). Completes once the
    /// caller's consumer exists (created at the end of the log when new, its cursor durable on a durable
    /// component); the caller then sends its `initial_response` and calls `start()`.
    ///
    /// `deadLetterTopic` empty means none (the SDK always sends the field); one the app may not publish to is
    /// refused (`checkDeadLetterTopic`). `metadata` is the request's, listed by `GetMetadata`. `send` hands the stream the
    /// events of one batch (to be written together) and says whether it can take more. `ended` is called (on `eventLoop`) when the subscription ends by itself: its component was retired;
    /// the caller ends the stream with that error (UNAVAILABLE), and the SDK reconnects.
    ///
    /// Must be called on `eventLoop`, the stream's, where the subscription lives (it is checked).
    package func subscribe(
        _ caller: Caller, pubsubName: String, topic: String, deadLetterTopic: String,
        metadata: [String: String] = [:], logger: Logger?, on eventLoop: any EventLoop,
        send: @escaping ([SubscriptionEvent]) -> Bool,
        ended: @escaping (APIError) -> Void = { _ in }
    ) -> Eventual<StreamingSubscription> {
        let handle: TenantPubSubHandle
        let subscription: StreamingSubscription
        do {
            if pubsubName.isEmpty { throw Self.streamError("pubsubName is required") }
            if topic.isEmpty { throw Self.streamError("topic is required") }
            handle = try components.scoped(
                TenantPubSubHandle.self, named: pubsubName, for: caller,
                tenant: registry?.tenantAccount(caller.namespace))
            _ = try handle.physicalTopic(topic)
            guard handle.maySubscribe(topic) else {
                throw Self.streamError(
                    "subscription to topic '\(topic)' on pubsub '\(pubsubName)' is not allowed "
                        + "for app '\(caller.appId)'")
            }
            if !deadLetterTopic.isEmpty { try checkDeadLetterTopic(deadLetterTopic, handle: handle) }
            let deadLetter = deadLetterTopic.isEmpty ? nil : deadLetterTopic
            subscription = try StreamingSubscription(
                api: self, handle: handle, topic: topic, deadLetterTopic: deadLetter,
                listing: StreamingSubscriptionListing(
                    app: caller.app, pubsubName: pubsubName, topic: topic, deadLetterTopic: deadLetter,
                    metadata: metadata, opened: subscriptions.nextOpened()),
                eventLoop: eventLoop, logger: logger, send: send, ended: ended)
        } catch {
            return .failure(error)
        }
        return handle.ensureConsumer(topic, on: eventLoop).map { _ in subscription }
    }

    /// The errors Dapr's streaming handshake returns as plain Go errors: gRPC UNKNOWN with the text.
    static func streamError(_ message: String) -> APIError {
        APIError(
            errorCode: "ERR_PUBSUB_SUBSCRIBE", rpcCode: .unknown, httpStatus: 500, message: message,
            reason: "DAPR_PUBSUB_SUBSCRIBE")
    }
}
