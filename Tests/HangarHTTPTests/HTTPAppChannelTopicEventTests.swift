import HangarRuntime
import NIOCore
import Testing

@testable import HangarHTTP

/// How an HTTP app's answers to pushed events are read (reference §3.3), and where events are POSTed.
@Suite("HTTP app channel: pushed events")
struct HTTPAppChannelTopicEventTests {
    static func body(_ text: String) -> ByteBuffer { ByteBuffer(string: text) }

    @Test(
        "a 2xx acks unless its JSON says RETRY or DROP (or an unknown status); 404 drops; other statuses fail",
        arguments: [
            (200, nil, "success"), (204, "", "success"), (200, "not json", "success"), (200, #"{"a":1}"#, "success"),
            (200, #"{"status":"SUCCESS"}"#, "success"), (200, #"{"status":""}"#, "success"),
            (200, #"{"status":"RETRY"}"#, "retry"), (201, #"{"status":"DROP"}"#, "drop"),
            (200, #"{"status":"LATER"}"#, "retry"), (404, nil, "drop"), (500, #"{"status":"SUCCESS"}"#, "failed 500"),
            (302, nil, "failed 302"), (429, nil, "failed 429"),
            // As Go decodes `{Status string `json:"status"`}`: the key in any case, the value exactly; a null or
            // non-string status, or a body that is not an object, is a success.
            (200, #"{"Status":"DROP"}"#, "drop"), (200, #"{"STATUS":"RETRY"}"#, "retry"),
            (200, #"{"status":"drop"}"#, "retry"), (200, #"{"status":"success"}"#, "retry"),
            (200, #"{"status":null}"#, "success"), (200, #"{"status":2}"#, "success"),
            (200, #"["DROP"]"#, "success"), (200, #""RETRY""#, "success"),
            // Go's Decoder reads the first value and stops: what follows it is never looked at; a value cut short
            // does not decode (a success).
            (200, #"{"status":"RETRY"} trailing junk"#, "retry"), (200, "  \n{\"status\":\"DROP\"}{", "drop"),
            (200, #"{"status":"RETRY""#, "success"),
        ] as [(Int, String?, String)])
    func outcome(status: Int, body: String?, expected: String) {
        let outcome = HTTPAppChannel.outcome(status: status, body: body.map(Self.body))
        let name =
            switch outcome {
            case .success: "success"
            case .retry: "retry"
            // The status goes with it, for the retry policy's `matching`.
            case .failed(_, .http(let status)): "failed \(status)"
            case .failed(_, let code): "failed \(code)"
            case .drop: "drop"
            case .discard: "discard"
            case .undeliverable: "undeliverable"
            }
        #expect(name == expected)
    }

    @Test("a bulk answer settles each entry by its status; missing or empty ones retry, 404 drops all")
    func bulk() {
        let answer =
            #"{"statuses":[{"entryId":"1","status":"SUCCESS"},{"entryId":"2","status":"DROP"},"#
            + #"{"entryId":"3","status":""},{"entryId":"4","status":"RETRY"}]}"#
        let outcomes = HTTPAppChannel.bulkOutcomes(status: 200, body: Self.body(answer), entries: ["1", "2", "3", "4"])
        #expect(outcomes["1"] == .success)
        #expect(outcomes["2"] == .drop("the app answered DROP"))
        #expect(outcomes["3"] == nil && outcomes["5"] == nil)
        #expect(outcomes["4"] == .retry("the app answered RETRY"))
        let unreadable = HTTPAppChannel.bulkOutcomes(status: 200, body: Self.body("nope"), entries: ["1", "2"])
        #expect(unreadable.count == 2 && unreadable.values.allSatisfy { if case .retry = $0 { true } else { false } })
        // Keys in any case, statuses exactly; a status that is not a string fails Go's decoding: all retry.
        let cased = #"{"Statuses":[{"EntryID":"1","Status":"DROP"},{"entryId":"2","status":"drop"},null]}"#
        let read = HTTPAppChannel.bulkOutcomes(status: 200, body: Self.body(cased), entries: ["1", "2"])
        #expect(read["1"] == .drop("the app answered DROP"))
        #expect(read["2"] == .retry("the app answered drop"))
        let typed = #"{"statuses":[{"entryId":"1","status":"SUCCESS"},{"entryId":"2","status":0}]}"#
        let mistyped = HTTPAppChannel.bulkOutcomes(status: 200, body: Self.body(typed), entries: ["1", "2"])
        #expect(mistyped.count == 2 && mistyped.values.allSatisfy { if case .retry = $0 { true } else { false } })
        // As Go's Decoder: the first JSON value is the answer, whatever follows it.
        let trailed = #"{"statuses":[{"entryId":"1","status":"DROP"}]} and then junk"#
        #expect(
            HTTPAppChannel.bulkOutcomes(status: 200, body: Self.body(trailed), entries: ["1"])["1"]
                == .drop("the app answered DROP"))
        let gone = HTTPAppChannel.bulkOutcomes(status: 404, body: nil, entries: ["1"])
        #expect(gone["1"] == .drop("the app answered 404"))
        let failed = HTTPAppChannel.bulkOutcomes(status: 503, body: nil, entries: ["1", "2"])
        #expect(failed["1"] == .failed("the app answered 503", code: .http(503)) && failed["2"] == failed["1"])
    }

    @Test(
        "the route is POSTed to as Go's path.Clean leaves it, with a leading slash",
        arguments: [
            ("orders", "/orders"), ("/orders", "/orders"), ("", "/"), ("/a//b/./c/../d/", "/a/b/d"),
            ("/../x", "/x"), ("/events/pubsub/topic", "/events/pubsub/topic"), ("a b", "/a%20b"),
        ])
    func routePath(route: String, path: String) {
        #expect(HTTPAppChannel.routePath(route) == path)
    }

    @Test("broker metadata becomes headers, without those that cannot travel or that the request sets itself")
    func headers() {
        let headers = HTTPAppChannel.headers([
            "pubsubName": "p", "Content-Type": "x", "bad name": "v", "newline": "a\nb", "custom": "value",
        ])
        #expect(headers["pubsubName"] == ["p"] && headers["custom"] == ["value"])
        #expect(headers["content-type"].isEmpty && headers["newline"].isEmpty && headers.count == 2)
    }
}
