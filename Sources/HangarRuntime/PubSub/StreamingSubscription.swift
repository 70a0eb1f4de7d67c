import Foundation
import HangarComponents
import Logging
import NIOCore

/// What a streaming subscription answers for one event (`TopicEventResponse.status`).
package enum SubscriptionOutcome: Sendable {
    case success, retry, drop

    /// What the delivery loop does with the message.
    var delivery: DeliveryOutcome {
        switch self {
        case .success: .success
        case .retry: .retry("the subscriber answered RETRY")
        case .drop: .drop("dropped by the subscriber")
        }
    }
}

/// One streaming subscription (`SubscribeTopicEventsAlpha1`): a `DeliveryLoop` whose sink is one stream. Events go
/// out as the stream can take them; answers come back by CloudEvent id (`processed`). See `DeliveryLoop` for the
/// window, retries, dead-lettering and what the end gives back.
///
/// The consumer group is the subscribing app (`TenantPubSubHandle.consumer`), so every stream of one app id
/// competes for the same messages and each app id gets every message. Streams keep flowing while the app's
/// channel is unhealthy, as Dapr's do. When the component is retired (removed from the configuration, or
/// replaced), the stream is ended with UNAVAILABLE (`ended`): the SDK reconnects, and a replaced component serves
/// the new stream.
///
/// Made on the stream's event loop, and every method must be called there: the `NIOLoopBoundBox` holding its
/// state checks it.
package final class StreamingSubscription: Sendable {
    /// The most events in flight (sent, not answered) on one stream: what bounds a subscriber that never answers.
    package static let maxInFlight = 100

    private let core: NIOLoopBoundBox<Core>

    /// The stream's side of the loop: turns deliveries into events and hands them to `send`.
    private final class Core: DeliverySink {
        var loop: DeliveryLoop?
        let send: ([SubscriptionEvent]) -> Bool
        let ended: (APIError) -> Void
        let topic: String
        let pubsubName: String

        init(
            topic: String, pubsubName: String, send: @escaping ([SubscriptionEvent]) -> Bool,
            ended: @escaping (APIError) -> Void
        ) {
            self.topic = topic
            self.pubsubName = pubsubName
            self.send = send
            self.ended = ended
        }

        /// Sends the batch's events in one `send` (the stream writes them together).
        func deliver(_ deliveries: [PubSubDelivery], loop: DeliveryLoop) -> Bool {
            var events: [SubscriptionEvent] = []
            events.reserveCapacity(deliveries.count)
            for delivery in deliveries {
                let event: SubscriptionEvent
                do {
                    event = try SubscriptionEvent.make(delivery.message, topic: topic, pubsubName: pubsubName, path: "/")
                } catch {
                    loop.settle(delivery, .undeliverable("it cannot be read as a CloudEvent (\(error))"))
                    continue
                }
                guard loop.track(delivery, key: event.id) else { continue }
                events.append(event)
            }
            return events.isEmpty || send(events)
        }

        func loopEnded(_ loop: DeliveryLoop) {
            ended(PubSubAPIError.subscriptionEnded(pubsubName, topic: topic))
        }
    }

    init(
        api: PubSubAPI, handle: TenantPubSubHandle, topic: String, deadLetterTopic: String?,
        listing: StreamingSubscriptionListing, eventLoop: any EventLoop, logger: Logger?,
        send: @escaping ([SubscriptionEvent]) -> Bool,
        ended: @escaping (APIError) -> Void
    ) throws(APIError) {
        let core = Core(topic: topic, pubsubName: handle.name, send: send, ended: ended)
        core.loop = try DeliveryLoop(
            api: api, handle: handle, topic: topic, deadLetterTopic: deadLetterTopic, window: Self.maxInFlight,
            listing: listing, eventLoop: eventLoop, logger: logger, sink: core)
        self.core = NIOLoopBoundBox(core, eventLoop: eventLoop)
    }

    /// Starts delivering (after the caller sent its `initial_response`).
    package func start() { core.value.loop?.start() }

    /// The stream can take events again.
    package func resumeWriting() { core.value.loop?.resume() }

    /// The subscriber's answer for the event `id`. An unknown id (answered twice, or from before a redelivery) is
    /// ignored, as Dapr logs and drops it.
    package func processed(id: String, outcome: SubscriptionOutcome) {
        core.value.loop?.complete(key: id, outcome.delivery)
    }

    /// Ends delivery: unanswered events are given back for redelivery, the notification and timer are released.
    package func stop() {
        let core = self.core.value
        core.loop?.stop()
        core.loop = nil
    }
}
