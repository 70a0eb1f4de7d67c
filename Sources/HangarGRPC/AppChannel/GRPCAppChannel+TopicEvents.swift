import Foundation
package import HangarRuntime
package import NIOCore
import SwiftProtobuf

/// Push delivery to a gRPC app: `AppCallback.OnTopicEvent` and the bulk calls, with Dapr's meaning of the app's
/// answers (reference §3.2).
extension GRPCAppChannel {
    static let onTopicEvent = "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"
    static let onBulkTopicEvent = "/dapr.proto.runtime.v1.AppCallback/OnBulkTopicEvent"
    static let onBulkTopicEventAlpha1 = "/dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1"

    /// `OnTopicEvent`: SUCCESS (or an empty answer, which is how `google.protobuf.Empty` arrives) acks, RETRY and
    /// any unknown status retry, DROP drops; UNIMPLEMENTED (no handler) drops without the dead-letter topic; any
    /// other error status is a failure with its code (retried as its retry policy's `matching` says); a transport
    /// failure fails the future (retried).
    package func deliver(_ event: AppTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<DeliveryOutcome>
    {
        let request: Dapr_Proto_Runtime_V1_TopicEventRequest
        do {
            request = try Dapr_Proto_Runtime_V1_TopicEventRequest(event.event)
        } catch {
            return eventLoop.makeSucceededFuture(.undeliverable("its extensions cannot be encoded: \(error)"))
        }
        return unary(
            path: Self.onTopicEvent, message: request, as: Dapr_Proto_Runtime_V1_TopicEventResponse.self,
            metadata: Self.metadata(of: event), deadline: deadline, on: eventLoop
        ).map { response in
            Self.outcome(response.status)
        }.flatMapErrorThrowing { error in
            if case AppChannelError.status(code: .unimplemented, let message) = error {
                return .discard("the app has no handler for it (UNIMPLEMENTED \(message))")
            }
            // The code goes to the retry policy's `matching` (Dapr's `CodeError`).
            if case AppChannelError.status(let code, _) = error {
                return .failed("\(error)", code: .grpc(code.rawValue))
            }
            throw error
        }
    }

    /// `OnBulkTopicEvent`, then `AppCallbackAlpha.OnBulkTopicEventAlpha1` when the app does not implement it; when
    /// neither is, every entry is dropped (Dapr). Entries the app gives no status for are missing (retried).
    package func deliverBulk(_ batch: AppBulkTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<[String: DeliveryOutcome]>
    {
        var request = Dapr_Proto_Runtime_V1_TopicEventBulkRequest()
        request.id = batch.id
        request.topic = batch.topic
        request.pubsubName = batch.pubsubName
        request.path = batch.path
        request.type = AppBulkTopicEvent.type
        request.metadata = batch.metadata
        do {
            request.entries = try batch.entries.map { entry in
                var item = Dapr_Proto_Runtime_V1_TopicEventBulkRequestEntry()
                item.entryID = entry.entryId
                item.contentType = entry.contentType
                item.metadata = entry.metadata
                if let raw = entry.rawPayload {
                    item.bytes = raw
                } else {
                    var event = Dapr_Proto_Runtime_V1_TopicEventCERequest()
                    event.id = entry.event.id
                    event.source = entry.event.source
                    event.type = entry.event.type
                    event.specVersion = entry.event.specVersion
                    event.dataContentType = entry.event.dataContentType
                    event.data = entry.event.data
                    event.extensions = try Google_Protobuf_Struct(goJSON: entry.event.extensions)
                    item.cloudEvent = event
                }
                return item
            }
        } catch {
            let outcome = DeliveryOutcome.undeliverable("its extensions cannot be encoded: \(error)")
            return eventLoop.makeSucceededFuture(
                Dictionary(batch.entries.map { ($0.entryId, outcome) }, uniquingKeysWith: { first, _ in first }))
        }
        let metadata = Self.grpcMetadata(batch.metadata)
        let message = request
        let call: @Sendable (String) -> EventLoopFuture<Dapr_Proto_Runtime_V1_TopicEventBulkResponse> = { path in
            self.unary(
                path: path, message: message, as: Dapr_Proto_Runtime_V1_TopicEventBulkResponse.self,
                metadata: metadata, deadline: deadline, on: eventLoop)
        }
        let entries = batch.entries.map(\.entryId)
        return call(Self.onBulkTopicEvent).flatMapError { error in
            guard case AppChannelError.status(code: .unimplemented, _) = error else {
                return eventLoop.makeFailedFuture(error)
            }
            return call(Self.onBulkTopicEventAlpha1)
        }.map { response in
            var outcomes: [String: DeliveryOutcome] = [:]
            for status in response.statuses { outcomes[status.entryID] = Self.outcome(status.status) }
            return outcomes
        }.flatMapErrorThrowing { error in
            let outcome: DeliveryOutcome
            switch error {
            case AppChannelError.status(code: .unimplemented, _):
                outcome = .discard("the app implements neither bulk delivery call (UNIMPLEMENTED)")
            case AppChannelError.status(let code, _):
                outcome = .failed("\(error)", code: .grpc(code.rawValue))
            default:
                throw error
            }
            return Dictionary(entries.map { ($0, outcome) }, uniquingKeysWith: { first, _ in first })
        }
    }

    /// What a `TopicEventResponse` status means: anything but SUCCESS and DROP is a retry.
    static func outcome(_ status: Dapr_Proto_Runtime_V1_TopicEventResponse.TopicEventResponseStatus) -> DeliveryOutcome {
        switch status {
        case .success: .success
        case .drop: .drop("the app answered DROP")
        case .retry: .retry("the app answered RETRY")
        case .UNRECOGNIZED(let value): .retry("the app answered the unknown status \(value)")
        }
    }

    /// The call's gRPC metadata: the broker metadata with lower-cased keys, and the trace context.
    static func metadata(of event: AppTopicEvent) -> [(name: String, value: String)] {
        var metadata = grpcMetadata(event.metadata)
        if !event.traceparent.isEmpty, !metadata.contains(where: { $0.name == "traceparent" }) {
            metadata.append(("traceparent", event.traceparent))
            if !event.tracestate.isEmpty { metadata.append(("tracestate", event.tracestate)) }
        }
        return metadata
    }

    /// Broker metadata as gRPC metadata (Dapr: keys lower-cased, without `content-type` and `content-length`),
    /// leaving out what cannot travel as a header (reserved or invalid names, invalid values) and a publisher's
    /// `dapr-api-token`, which would pass for the runtime's token to the app.
    static func grpcMetadata(_ metadata: [String: String]) -> [(name: String, value: String)] {
        var fields: [(name: String, value: String)] = []
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let name = key.lowercased()
            guard name != "content-type", name != "content-length", name != "dapr-api-token", !name.hasPrefix(":"),
                !name.hasPrefix("grpc-"),
                GRPCClientConnectionHandler.isValid(name: name, value: value)
            else { continue }
            fields.append((name, value))
        }
        return fields
    }
}
