import Foundation
@_spi(Benchmarks) import HangarGRPC
import NIOCore
import NIOHPACK
import SwiftProtobuf

/// The seed corpora (Fuzz/Corpus/<target>/): small valid inputs of each kind, made here so that they stay valid as
/// the code changes. `HANGAR_FUZZ_WRITE_SEEDS=Fuzz/Corpus hangar-fuzz` writes them (run from the repository root:
/// the YAML seeds are the examples in tenancy/examples).
enum FuzzSeeds {
    static func write(to directory: String) throws {
        for target in FuzzTarget.allCases {
            let folder = "\(directory)/\(target.rawValue)"
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            for (name, bytes) in try seeds(target) {
                try Data(bytes).write(to: URL(fileURLWithPath: "\(folder)/\(name)"))
            }
        }
    }

    static func seeds(_ target: FuzzTarget) throws -> [(String, [UInt8])] {
        switch target {
        case .http2: try http2()
        case .hpack: try hpack()
        case .grpcDeframer: deframer()
        case .http1: http1()
        case .stateJSON: stateJSON()
        case .tenantYAML: try files("tenancy/examples", extra: [])
        case .resourceYAML: try files("tenancy/examples/resources", extra: resources)
        case .cloudEvent: cloudEvents()
        case .resp: resp()
        }
    }

    // MARK: gRPC over HTTP/2

    static let dapr = "/dapr.proto.runtime.v1.Dapr/"

    static func request(_ method: String, _ extra: [(String, String)] = []) -> HPACKHeaders {
        var headers: HPACKHeaders = [
            ":method": "POST", ":scheme": "http", ":path": dapr + method, ":authority": "localhost",
            "content-type": "application/grpc", "te": "trailers",
        ]
        for (name, value) in extra { headers.add(name: name, value: value) }
        return headers
    }

    static func block(_ encoder: inout HPACKEncoder, _ headers: HPACKHeaders) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try encoder.encode(headers: headers, to: &buffer)
        return Array(buffer.readableBytesView)
    }

    static func message(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
        Array(try GRPCService.frame(message).readableBytesView)
    }

    static func saveState() throws -> [UInt8] {
        var item = Dapr_Proto_Common_V1_StateItem()
        item.key = "k"
        item.value = Data(#"{"n":1}"#.utf8)
        item.metadata = ["ttlInSeconds": "60"]
        var request = Dapr_Proto_Runtime_V1_SaveStateRequest()
        request.storeName = "statestore"
        request.states = [item]
        return try message(request)
    }

    static func getState() throws -> [UInt8] {
        var request = Dapr_Proto_Runtime_V1_GetStateRequest()
        request.storeName = "statestore"
        request.key = "k"
        return try message(request)
    }

    static func publish() throws -> [UInt8] {
        var request = Dapr_Proto_Runtime_V1_PublishEventRequest()
        request.pubsubName = "pubsub"
        request.topic = "orders"
        request.data = Data(#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"a":1}}"#.utf8)
        request.dataContentType = "application/cloudevents+json"
        return try message(request)
    }

    /// A connection's opening (SETTINGS, a connection WINDOW_UPDATE) then the calls, each HEADERS and one DATA.
    static func connection(_ calls: [(String, [UInt8])], then: (inout HTTP2Frames) -> Void = { _ in }) throws
        -> [UInt8]
    {
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        var frames = HTTP2Frames()
        frames.settings([(0x2, 0), (0x4, 1 << 20), (0x6, 16384)])
        frames.frame(0x8, [0, 0x0F, 0, 0])
        for (index, (method, body)) in calls.enumerated() {
            let stream = UInt32(2 * index + 1)
            frames.headers(
                stream, try block(&encoder, request(method, [("grpc-timeout", "5S")]))[...], endStream: false)
            frames.data(stream, body, endStream: true)
        }
        frames.settings([], ack: true)
        then(&frames)
        return frames.bytes
    }

    static func http2() throws -> [(String, [UInt8])] {
        let unary = try connection([("SaveState", saveState()), ("GetState", getState())])
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        let head = try block(&encoder, request("GetState"))
        let control = try connection([("GetMetadata", message(Dapr_Proto_Runtime_V1_GetMetadataRequest()))]) {
            $0.frame(0x6, [1, 2, 3, 4, 5, 6, 7, 8])  // PING
            $0.frame(0x2, stream: 5, [0, 0, 0, 1, 16])  // PRIORITY
            $0.frame(0x8, stream: 1, [0, 0, 1, 0])  // WINDOW_UPDATE on a closed stream
            $0.frame(0x3, stream: 7, [0, 0, 0, 8])  // RST_STREAM on an idle stream
            $0.frame(0x7, [0, 0, 0, 0, 0, 0, 0, 0])  // GOAWAY
        }
        // HEADERS padded and with priority, split into CONTINUATION; DATA padded; the message in two frames.
        var split = HTTP2Frames()
        split.settings([])
        let body = try getState()
        split.frame(0x1, flags: 0x8 | 0x20, stream: 1, [3, 0, 0, 0, 0, 16] + head.prefix(10) + [0, 0, 0])
        split.continuation(1, head.dropFirst(10))
        split.frame(0x0, flags: 0x8, stream: 1, [2] + body.prefix(4) + [0, 0])
        split.data(1, body.dropFirst(4), endStream: true)
        let stream = try connection([("PublishEvent", publish())]) {
            $0.headers(3, head[...], endStream: false)
            $0.frame(0x3, stream: 3, [0, 0, 0, 8])  // cancelled mid-request
        }
        return [
            ("unary-save-get", [0] + unary), ("unary-save-get-in-7-byte-reads", [7] + unary),
            ("control-frames", [0] + control), ("padded-continuation", [0] + split.bytes),
            ("publish-then-cancel", [0] + stream), ("one-byte-reads", [1] + unary.prefix(200)),
        ]
    }

    static func hpack() throws -> [(String, [UInt8])] {
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        let save = try block(&encoder, request("SaveState", [("dapr-api-token", "t"), ("grpc-timeout", "100m")]))
        var plain = HPACKEncoder(allocator: ByteBufferAllocator(), useHuffmanEncoding: false)
        let get = try block(&plain, request("GetState", [("user-agent", "grpc-python/1.0"), ("x-custom", "v")]))
        let notGRPC = try block(&plain, [":method": "GET", ":scheme": "http", ":path": "/", ":authority": "h"])
        return [
            ("save-huffman", [0] + save), ("get-literal", [0] + get), ("get-split", [2] + get),
            ("get-twice", [4] + save), ("end-stream-at-headers", [1] + get), ("not-grpc", [1] + notGRPC),
            // a dynamic table size update to 0, then an indexed :method POST
            ("table-size-update", [0, 0x20, 0x83] + get),
        ]
    }

    // MARK: gRPC messages

    static func deframer() -> [(String, [UInt8])] {
        let two: [UInt8] = [0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0]
        return [
            ("two-messages", [16, 0] + two), ("two-messages-bytewise", [16, 1] + two),
            ("two-messages-kept-prefix", [0x80 | 16, 3] + two), ("partial", [16, 2] + two + [0, 0, 0]),
            ("compressed", [16, 0, 1, 0, 0, 0, 1, 9]),
            ("too-large", [1, 0, 0, 0, 0, 0, 9] + Array(repeating: 7, count: 9)),
        ]
    }

    // MARK: HTTP/1.1

    static func http1() -> [(String, [UInt8])] {
        func post(_ path: String, _ body: String, _ headers: String = "content-type: application/json\r\n") -> String {
            "POST \(path) HTTP/1.1\r\nhost: h\r\n\(headers)content-length: \(body.utf8.count)\r\n\r\n\(body)"
        }
        let requests: [(String, String)] = [
            (
                "save-get-delete",
                post("/v1.0/state/statestore", #"[{"key":"k","value":{"n":1}}]"#)
                    + "GET /v1.0/state/statestore/k HTTP/1.1\r\nhost: h\r\n\r\n"
                    + "DELETE /v1.0/state/statestore/k HTTP/1.1\r\nhost: h\r\nif-match: 1\r\n\r\n"
            ),
            (
                "bulk",
                "PUT /v1.0/state/statestore/bulk?metadata.x=1 HTTP/1.1\r\nhost: h\r\ncontent-length: 20\r\n\r\n"
                    + #"{"keys":["a","b"]} "#
            ),
            (
                "chunked-transaction",
                "POST /v1.0/state/statestore/transaction HTTP/1.1\r\nhost: h\r\n"
                    + "transfer-encoding: chunked\r\n\r\n1a\r\n" + #"{"operations":[{"operation"# + "\r\n"
                    + "2d\r\n" + #":"upsert","request":{"key":"a","value":1}}]}"# + "\r\n0\r\n\r\n"
            ),
            ("publish", post("/v1.0/publish/pubsub/orders?metadata.ttlInSeconds=5", #"{"id":1}"#)),
            (
                "publish-cloudevent",
                post(
                    "/v1.0/publish/pubsub/orders", #"{"specversion":"1.0","id":"1"}"#,
                    "content-type: application/cloudevents+json\r\n")
            ),
            ("metadata-health", "GET /v1.0/metadata HTTP/1.1\r\nhost: h\r\n\r\nGET /v1.0/healthz HTTP/1.1\r\n\r\n"),
            ("invoke-by-header", post("/orders/1", "x", "dapr-app-id: other\r\n")),
            ("not-found-and-close", "GET /v2/x HTTP/1.1\r\nhost: h\r\nconnection: close\r\n\r\n"),
            ("http-1.0", "GET /v1.0/state/statestore/k%2Fx HTTP/1.0\r\n\r\n"),
        ]
        return requests.flatMap { name, text in
            [(name, [0] + Array(text.utf8)), ("\(name)-in-5-byte-reads", [5] + Array(text.utf8))]
        }
    }

    static func stateJSON() -> [(String, [UInt8])] {
        let seeds: [(String, UInt8, String)] = [
            (
                "save", 0,
                #"[{"key":"k","value":{"n":1},"etag":"1","metadata":{"ttlInSeconds":"60"},"#
                    + #""options":{"concurrency":"first-write","consistency":"strong"}}]"#
            ),
            ("save-string", 0, #"[{"key":"s","value":"text"},{"key":"n","value":null}]"#),
            ("bulk", 1, #"{"keys":["k","s","missing"],"parallelism":10}"#),
            (
                "transaction", 2,
                #"{"operations":[{"operation":"upsert","request":{"key":"a","value":[1,2]}},"#
                    + #"{"operation":"delete","request":{"key":"k","etag":"3"}}],"metadata":{"partitionKey":"p"}}"#
            ),
        ]
        return seeds.map { name, route, body in (name, [route] + Array(body.utf8)) }
    }

    // MARK: YAML

    static let resources: [(String, String)] = [
        (
            "subscription.yaml",
            """
            apiVersion: dapr.io/v2alpha1
            kind: Subscription
            metadata: {name: orders-sub}
            spec:
              pubsubname: pubsub
              topic: orders
              routes:
                rules:
                - match: event.type == "widget"
                  path: /widgets
                default: /orders
              deadLetterTopic: orders-dlq
              bulkSubscribe: {enabled: true, maxMessagesCount: 50}
              metadata: {rawPayload: true}
            scopes: [orders]
            """
        ),
        (
            "resiliency.yaml",
            """
            apiVersion: dapr.io/v1alpha1
            kind: Resiliency
            metadata: {name: res}
            spec:
              policies:
                timeouts: {general: 5s, long: 1h30m}
                retries:
                  backoff: {policy: exponential, maxInterval: 15s, maxRetries: -1}
                circuitBreakers:
                  cb: {maxRequests: 1, timeout: 30s, trip: consecutiveFailures > 3}
              targets:
                apps:
                  orders: {timeout: general, retry: backoff, circuitBreaker: cb}
                components:
                  pubsub: {outbound: {retry: backoff}}
            """
        ),
        (
            "configuration.yaml",
            """
            apiVersion: dapr.io/v1alpha1
            kind: Configuration
            metadata: {name: appconfig, namespace: team-a}
            spec:
              accessControl:
                defaultAction: deny
                trustDomain: public
                policies:
                - appId: billing
                  defaultAction: allow
                  namespace: team-a
                  operations: [{name: /op, httpVerb: [POST], action: deny}]
            """
        ),
        (
            "env-secret.yaml",
            """
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: {name: env}
            spec:
              type: secretstores.local.env
              version: v1
              metadata:
              - {name: prefix, value: "{env:FUZZ_ENV}"}
            ---
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata: {name: cache}
            spec:
              type: state.redis
              version: v1
              metadata:
              - {name: redisHost, value: "localhost:6379"}
              - {name: redisPassword, secretKeyRef: {name: pw, key: pw}}
            auth: {secretStore: env}
            """
        ),
    ]

    static func files(_ folder: String, extra: [(String, String)]) throws -> [(String, [UInt8])] {
        let names = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.hasSuffix(".yaml") }
        return try names.sorted().map { ($0, Array(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\($0)")))) }
            + extra.map { ($0, Array($1.utf8)) }
    }

    // MARK: CloudEvents

    static func cloudEvents() -> [(String, [UInt8])] {
        let seeds: [(String, UInt8, String)] = [
            (
                "cloudevent", 0,
                #"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"application/json","#
                    + #""data":{"a":[1,2.5e3,"x\u00e9"]},"traceparent":"00-1-2-01"}"#
            ),
            (
                "cloudevent-null-source", 3 | 8,
                #"{"specversion":"1.0","id":"1","source":null,"data_base64":"AAE="} trailing"#
            ),
            ("json-data", 1 | 0x10, #"{"order":{"id":1,"items":[true,false,null]},"note":"<&>\u2028"}"#),
            ("json-number", 6, "-0.5e-7"),
            ("not-json", 1, "{\"a\":"),
            ("text", 2, "plain text \u{1F600}"),
            ("bytes", 4, "\u{0}\u{1}\u{FF}"),
        ]
        return seeds.map { name, options, body in (name, [options] + Array(body.utf8)) }
    }

    // MARK: RESP

    static func resp() -> [(String, [UInt8])] {
        let seeds: [(String, UInt8, String)] = [
            ("simple", 0, "+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n"),
            ("array", 1, "*3\r\n$3\r\nfoo\r\n:1\r\n*2\r\n+a\r\n$0\r\n\r\n"),
            ("resp3", 3, "%1\r\n+k\r\n,1.5\r\n_\r\n#t\r\n(12345678901234567890\r\n=7\r\ntxt:abc\r\n~1\r\n:1\r\n"),
            ("push", 0, ">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n|1\r\n+a\r\n:1\r\n:2\r\n!3\r\nerr\r\n"),
            ("stream-entries", 2, "*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$2\r\n{}\r\n"),
        ]
        return seeds.map { name, size, text in (name, [size] + Array(text.utf8)) }
    }
}
