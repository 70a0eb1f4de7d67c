import AsyncHTTPClient
import Foundation
package import HangarRuntime
package import NIOCore
import NIOHTTP1

/// Push delivery to an HTTP app: a POST of the CloudEvent to the matched route, with Dapr's meaning of the app's
/// answers (reference §3.3).
extension HTTPAppChannel {
    /// POSTs the stored envelope verbatim to the route (`application/cloudevents+json`, the broker metadata as
    /// headers, the trace context). A 2xx acks unless its JSON body says `{"status": "RETRY"}` (any unknown status
    /// too) or `"DROP"`; 404 drops (to the dead-letter topic when set); any other status is a failure carrying it
    /// (for the retry policy's `matching`). The future fails when the app cannot be reached or does not answer in
    /// time (retried).
    package func deliver(_ event: AppTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<DeliveryOutcome>
    {
        let request: HTTPClient.Request
        do {
            var headers = Self.headers(event.metadata)
            if !event.traceparent.isEmpty, !headers.contains(name: "traceparent") {
                headers.add(name: "traceparent", value: event.traceparent)
                if !event.tracestate.isEmpty { headers.add(name: "tracestate", value: event.tracestate) }
            }
            headers.replaceOrAdd(name: "content-type", value: "application/cloudevents+json")
            request = try self.request(
                .POST, uri: Self.routePath(event.event.path), headers: headers,
                body: .byteBuffer(ByteBuffer(bytes: event.envelope)))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return send(request, deadline: deadline, on: eventLoop).map { response in
            Self.outcome(status: Int(response.status.code), body: response.body)
        }
    }

    /// POSTs Dapr's bulk JSON to the route and reads `{"statuses": [{"entryId", "status"}]}`: an entry missing or
    /// with an empty status is a retry; a 2xx whose body cannot be read retries every entry; 404 drops every entry;
    /// any other status is a retry of all.
    package func deliverBulk(_ batch: AppBulkTopicEvent, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<[String: DeliveryOutcome]>
    {
        let request: HTTPClient.Request
        do {
            let entries: [[String: Any]] = batch.entries.map { entry in
                [
                    "entryId": entry.entryId, "event": Self.bulkEvent(entry), "metadata": entry.metadata,
                    "contentType": entry.contentType,
                ]
            }
            let body: [String: Any] = [
                "id": batch.id, "type": AppBulkTopicEvent.type, "topic": batch.topic, "pubsubname": batch.pubsubName,
                "metadata": batch.metadata, "entries": entries,
            ]
            let data = try JSONSerialization.data(withJSONObject: body, options: [.withoutEscapingSlashes])
            var headers = HTTPHeaders()
            headers.add(name: "content-type", value: "application/json")
            request = try self.request(
                .POST, uri: Self.routePath(batch.path), headers: headers, body: .byteBuffer(ByteBuffer(bytes: data)))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let ids = batch.entries.map(\.entryId)
        return send(request, deadline: deadline, on: eventLoop).map { response in
            Self.bulkOutcomes(status: Int(response.status.code), body: response.body, entries: ids)
        }
    }

    /// What the app's answer to one event means (reference §3.3), read as Dapr's `json.NewDecoder(body).Decode`
    /// reads it into `{Status string `json:"status"`}`: the first JSON value of the body (anything after it is not
    /// read, so `{"status":"RETRY"} junk` retries), the key in any case, the value exactly (`"drop"` is an unknown
    /// status, a retry); a body that is not a JSON object, a `null` status, or one that is not a string (Go's
    /// decoding fails) is a success.
    static func outcome(status: Int, body: ByteBuffer?) -> DeliveryOutcome {
        if status == 404 { return .drop("the app answered 404") }
        guard (200..<300).contains(status) else { return .failed("the app answered \(status)", code: .http(status)) }
        guard let body, body.readableBytes > 0, case .object(let object)? = GoJSON.decodePrefix(body.readableBytesView),
            case .string(let answer)? = member("status", of: object)
        else { return .success }
        switch answer {
        case "", "SUCCESS": return .success
        case "DROP": return .drop("the app answered DROP")
        case "RETRY": return .retry("the app answered RETRY")
        default: return .retry("the app answered the unknown status \(answer)")
        }
    }

    /// What the app's answer to a bulk delivery means for each entry (Dapr's `{"statuses": [{"entryId",
    /// "status"}]}`, decoded as Go's decoder does: the first JSON value, keys in any case, statuses exactly): an
    /// entry missing or with an empty status is a retry; a 2xx whose body Go could not decode (not an object, a
    /// status that is not a string) retries every entry; 404 drops every entry; any other status is a retry of all.
    static func bulkOutcomes(status: Int, body: ByteBuffer?, entries: [String]) -> [String: DeliveryOutcome] {
        func all(_ outcome: DeliveryOutcome) -> [String: DeliveryOutcome] {
            Dictionary(entries.map { ($0, outcome) }, uniquingKeysWith: { first, _ in first })
        }
        if status == 404 { return all(.drop("the app answered 404")) }
        guard (200..<300).contains(status) else {
            return all(.failed("the app answered \(status)", code: .http(status)))
        }
        let unreadable = all(.retry("the app's answer is not a bulk response"))
        guard let body, case .object(let object)? = GoJSON.decodePrefix(body.readableBytesView) else {
            return unreadable
        }
        let statuses: [GoJSON]
        switch member("statuses", of: object) {
        case nil, .null?: return [:]
        case .array(let items)?: statuses = items
        default: return unreadable
        }
        var outcomes: [String: DeliveryOutcome] = [:]
        for item in statuses {
            if item == .null { continue }
            guard case .object(let entry) = item else { return unreadable }
            let id = member("entryId", of: entry)
            let answer = member("status", of: entry)
            // Go fails the whole decoding on a field of the wrong type.
            for field in [id, answer] {
                switch field {
                case nil, .null?, .string?: continue
                default: return unreadable
                }
            }
            guard case .string(let id)? = id, case .string(let answer)? = answer, !answer.isEmpty else { continue }
            switch answer {
            case "SUCCESS": outcomes[id] = .success
            case "DROP": outcomes[id] = .drop("the app answered DROP")
            default: outcomes[id] = .retry("the app answered \(answer)")
            }
        }
        return outcomes
    }

    /// The member `key` of a decoded JSON object as Go's decoder finds a struct field: the exact key, else one that
    /// matches it ignoring case.
    static func member(_ key: String, of object: [String: GoJSON]) -> GoJSON? {
        if let exact = object[key] { return exact }
        let lower = key.lowercased()
        return object.first { $0.key.lowercased() == lower }?.value
    }

    /// One bulk entry's `event`: the CloudEvent as a JSON object; for a raw payload, the bytes as JSON when they
    /// are JSON, else as a string (base64 when they are not UTF-8).
    static func bulkEvent(_ entry: AppBulkTopicEvent.Entry) -> Any {
        if let raw = entry.rawPayload {
            if let value = try? JSONSerialization.jsonObject(with: raw, options: [.fragmentsAllowed]) { return value }
            return String(data: raw, encoding: .utf8) ?? raw.base64EncodedString()
        }
        return (try? JSONSerialization.jsonObject(with: entry.envelope)) ?? [:]
    }

    /// The request path of a route: a leading `/` added and the path cleaned as Go's `path.Clean` does (`.` and
    /// `..` segments resolved, repeated slashes collapsed), then percent-encoded where needed.
    static func routePath(_ route: String) -> String {
        var segments: [Substring] = []
        for segment in route.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": _ = segments.popLast()
            default: segments.append(segment)
            }
        }
        let cleaned = "/" + segments.joined(separator: "/")
        return cleaned.addingPercentEncoding(withAllowedCharacters: pathAllowed) ?? cleaned
    }

    /// Broker metadata as request headers, leaving out what cannot travel as one (invalid names or values, and
    /// the headers the request sets itself) and a publisher's `dapr-api-token`, which would pass for the
    /// runtime's token to the app.
    static func headers(_ metadata: [String: String]) -> HTTPHeaders {
        var headers = HTTPHeaders()
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) {
            let lower = name.lowercased()
            guard !name.isEmpty, lower != "content-type", lower != "content-length", lower != "host",
                lower != "dapr-api-token",
                !hopByHop.contains(lower),
                name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) }),
                value.utf8.allSatisfy({ $0 != 0 && $0 != 0x0A && $0 != 0x0D })
            else { continue }
            headers.add(name: name, value: value)
        }
        return headers
    }
}
