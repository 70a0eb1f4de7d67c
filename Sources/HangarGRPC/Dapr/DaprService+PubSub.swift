import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHPACK
import SwiftProtobuf

extension DaprService {
    /// `PublishEvent`, `BulkPublishEvent` and its deprecated twin `BulkPublishEventAlpha1` (one handler, as in
    /// Dapr), on the runtime's `PubSubAPI` (shared with the HTTP front-end). A bulk publish that fails is a status
    /// error with an empty response, as Dapr answers over gRPC (`failedEntries` only travels over HTTP).
    static func registerPubSub(_ service: inout GRPCService, _ pubsub: PubSubAPI) {
        service.unary(prefix + "PublishEvent", Dapr_Proto_Runtime_V1_PublishEventRequest.self) { request, call in
            let publish = PublishRequest(
                pubsubName: request.pubsubName, topic: request.topic, data: request.data,
                contentType: request.dataContentType, metadata: request.metadata, trace: trace(call.headers),
                traceInRawMetadata: true)
            return pubsub.publish(call.caller, publish, on: call.eventLoop).map { Google_Protobuf_Empty() }
        }
        for name in ["BulkPublishEvent", "BulkPublishEventAlpha1"] {
            service.unary(prefix + name, Dapr_Proto_Runtime_V1_BulkPublishRequest.self) { request, call in
                // A protobuf map has no "absent": an entry has metadata of its own when it has any (as in Go).
                let entries = request.entries.map { entry in
                    BulkPublishEntry(
                        entryId: entry.entryID, event: entry.event, contentType: entry.contentType,
                        metadata: entry.metadata.isEmpty ? nil : entry.metadata)
                }
                return pubsub.bulkPublish(
                    call.caller, pubsubName: request.pubsubName, topic: request.topic, entries: entries,
                    metadata: request.metadata, trace: trace(call.headers), on: call.eventLoop
                ).map { Dapr_Proto_Runtime_V1_BulkPublishResponse() }
            }
        }
    }

    /// The caller's trace context: `grpc-trace-bin`, else `traceparent`, with `tracestate` (as Dapr reads them).
    static func trace(_ headers: HPACKHeaders) -> PublishTrace {
        let incoming =
            headers.first(name: "grpc-trace-bin").flatMap(PublishTrace.traceparent(fromGRPCTraceBin:))
            ?? headers.first(name: "traceparent")
        return PublishTrace(incoming: incoming, incomingState: headers.first(name: "tracestate"))
    }
}
