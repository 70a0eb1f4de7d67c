package import HangarComponents
package import NIOCore

extension PubSubAPI {
    /// Refuses a dead-letter topic the subscribing app could never publish to: a hostile name, or one its topic
    /// scopes (`publishingScopes`, `allowedTopics`, `protectedTopics`) forbid, with the error a publish to it would
    /// get (`ERR_PUBSUB_FORBIDDEN`, PERMISSION_DENIED). Dapr accepts such a subscription and finds out at the first
    /// dead-lettering, when the publish is refused and the original is nacked, so the message comes back for ever;
    /// saying so when the subscription is made is clearer and loses nothing.
    package func checkDeadLetterTopic(_ topic: String, handle: TenantPubSubHandle) throws(APIError) {
        _ = try handle.physicalTopic(topic)
        guard handle.mayPublish(topic) else {
            throw PubSubAPIError.forbidden(handle.name, topic: topic, app: handle.app)
        }
    }

    /// Publishes a message that could not be delivered to `topic` on the same component, in the subscribing app's
    /// tenant, through the publish path as the app's own publish would go: its topic scopes, the tenant's
    /// `maxPubsubBytes`, and the publish metrics (counted for the subscribing app). The message is the original as
    /// stored (its bytes, content type and metadata), as Dapr publishes the original broker message.
    package func deadLetter(
        _ message: PubSubMessage, handle: TenantPubSubHandle, topic: String, on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        let target: PublishTarget
        do {
            target = PublishTarget(
                caller: Caller(app: handle.app, transport: .unixSocket), handle: handle, topic: topic,
                physicalTopic: try handle.physicalTopic(topic), rawPayload: false, metadata: message.metadata)
        } catch {
            return .failure(error)
        }
        return send([message], to: target, on: eventLoop).map { _ in }
    }
}
