import Foundation
import HangarComponents
import HangarRuntime
import Logging
import NIOCore
import SwiftProtobuf

extension DaprService {
    /// `SubscribeTopicEventsAlpha1`, the streaming subscription, on the runtime's `PubSubAPI.subscribe`.
    static func registerSubscribe(_ service: inout GRPCService, _ pubsub: PubSubAPI, logger: Logger) {
        service.bidirectionalStreaming(prefix + "SubscribeTopicEventsAlpha1") { call in
            GRPCSubscribeStream.start(call, pubsub, logger: logger)
        }
    }
}

/// One `SubscribeTopicEventsAlpha1` call, on its event loop: the handshake (the first message must be
/// `initial_request`; exactly one `initial_response` once the subscription is valid and its consumer exists),
/// then events out as `event_message` and answers in as `event_processed`, relayed to a `StreamingSubscription`.
///
/// The stream's end stops the subscription: the client closing its side (Dapr unsubscribes on EOF, and the call is
/// finished with OK), a cancel, a deadline or a lost connection. The subscription's own end (its component was
/// retired) and the connection's drain (hangard shuts down or hands over to a successor) finish the call with
/// UNAVAILABLE, after which the SDK subscribes again. The call's callbacks own this object, which owns
/// the subscription; the subscription holds the call weakly, so finishing or cancelling the call frees them all.
/// `@unchecked Sendable`: used on the call's event loop only (completions hop back to it).
final class GRPCSubscribeStream: @unchecked Sendable {
    private enum State {
        case awaitingInitial
        case opening
        case open(StreamingSubscription)
        case over
    }

    private weak var call: GRPCStreamCall?
    private var state = State.awaitingInitial
    /// The client ended its side while the subscription was being opened.
    private var endWhenOpened = false

    private init(_ call: GRPCStreamCall) {
        self.call = call
    }

    static func start(_ call: GRPCStreamCall, _ pubsub: PubSubAPI, logger: Logger) {
        let stream = GRPCSubscribeStream(call)
        call.onMessage = { bytes in stream.received(bytes, pubsub, logger: logger) }
        call.onEnd = {
            // Ended before the handshake completed: the request is still answered (its error, or one
            // initial_response), then the call ends.
            if case .opening = stream.state { return stream.endWhenOpened = true }
            stream.stop()
            stream.call?.finish()
        }
        call.onCancel = { stream.stop() }
        call.onDrain = {
            stream.fail(GRPCStatus(code: .unavailable, message: "hangard is draining this connection; subscribe again"))
        }
        call.onWritable = {
            if case .open(let subscription) = stream.state { subscription.resumeWriting() }
        }
    }

    private func received(_ bytes: ByteBuffer, _ pubsub: PubSubAPI, logger: Logger) {
        guard let call else { return }
        let request: Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestAlpha1
        do {
            request = try bytes.withUnsafeReadableBytes { try .init(serializedBytes: $0.bytes) }
        } catch {
            return fail(GRPCStatus(error))
        }
        switch (state, request.subscribeTopicEventsRequestType) {
        case (.awaitingInitial, .initialRequest(let initial)):
            state = .opening
            open(initial, call, pubsub, logger: logger)
        case (.awaitingInitial, _):
            fail(GRPCStatus(code: .unknown, message: "initial request is required"))
        case (_, .initialRequest):
            fail(GRPCStatus(code: .unknown, message: "duplicate initial request received"))
        case (.open(let subscription), .eventProcessed(let processed)):
            let outcome: SubscriptionOutcome =
                switch processed.status.status {
                case .success: .success
                case .drop: .drop
                // RETRY, and any other value, as Dapr.
                case .retry, .UNRECOGNIZED: .retry
                }
            subscription.processed(id: processed.id, outcome: outcome)
        case (_, .eventProcessed(let processed)):
            logger.debug("streaming subscription: answer for \(processed.id) before any event was sent; ignored")
        case (_, nil):
            break
        }
    }

    private func open(
        _ initial: Dapr_Proto_Runtime_V1_SubscribeTopicEventsRequestInitialAlpha1, _ call: GRPCStreamCall,
        _ pubsub: PubSubAPI, logger: Logger
    ) {
        let eventLoop = call.context.eventLoop
        pubsub.subscribe(
            call.context.caller, pubsubName: initial.pubsubName, topic: initial.topic,
            deadLetterTopic: initial.deadLetterTopic, metadata: initial.metadata, logger: logger, on: eventLoop
        ) { [weak call] events in
            guard let call else { return false }
            var writable = true
            call.withCorkedWrites {
                for event in events {
                    do {
                        if try !call.send(Self.message(event)) { writable = false }
                    } catch {
                        logger.warning("streaming subscription: cannot encode event \(event.id): \(error)")
                        if !call.isWritable { writable = false }
                    }
                }
            }
            return writable
        } ended: { error in
            // The component was retired: UNAVAILABLE, and the SDK reconnects.
            self.fail(GRPCStatus(error))
        }.whenComplete { result in
            if eventLoop.inEventLoop { self.opened(result) } else { eventLoop.execute { self.opened(result) } }
        }
    }

    private func opened(_ result: Result<StreamingSubscription, any Error>) {
        switch result {
        case .failure(let error):
            fail(GRPCStatus(error))
        case .success(let subscription):
            guard case .opening = state, let call, !call.isDone else { return subscription.stop() }
            state = .open(subscription)
            var response = Dapr_Proto_Runtime_V1_SubscribeTopicEventsResponseAlpha1()
            response.initialResponse = .init()
            _ = try? call.send(response)
            if endWhenOpened {
                stop()
                return call.finish()
            }
            subscription.start()
        }
    }

    private func stop() {
        if case .open(let subscription) = state { subscription.stop() }
        state = .over
    }

    private func fail(_ status: GRPCStatus) {
        stop()
        call?.finish(status)
    }

    /// The event as Dapr's `TopicEventRequest` inside an `event_message`.
    static func message(_ event: SubscriptionEvent) throws -> Dapr_Proto_Runtime_V1_SubscribeTopicEventsResponseAlpha1
    {
        var response = Dapr_Proto_Runtime_V1_SubscribeTopicEventsResponseAlpha1()
        response.eventMessage = try Dapr_Proto_Runtime_V1_TopicEventRequest(event)
        return response
    }
}
