import Foundation
import HangarComponents
import HTTPTypes
public import HangarRuntime
public import Hummingbird
import NIOCore

/// Dapr's HTTP API (`/v1.0/...`) on Hummingbird: decodes requests into runtime calls and encodes their results.
/// Dapr semantics live in the runtime's building blocks, shared with the gRPC front-end.
public struct DaprHTTPRoutes: Sendable {
    let runtime: Runtime

    public init(runtime: Runtime) {
        self.runtime = runtime
    }

    static let tokenHeader = HTTPField.Name("dapr-api-token")!

    /// Every route, on a router whose errors become Dapr error bodies.
    public func router() -> Router<HangarRequestContext> {
        let router = Router(context: HangarRequestContext.self)
        router.add(middleware: DaprErrorMiddleware())
        // Health: no token needed (the SDK probes /healthz/outbound before it has a connection). Both are 204 once
        // every listener is up and every component has made its first initialisation attempt, 500 before, as in
        // Dapr. A DOWN component does not fail them: the node serves its other tenants; it shows in the metadata
        // API and in /healthz/detail on the metrics listener.
        let health = runtime.health
        for (path, errorCode, what) in [
            ("/v1.0/healthz", "ERR_HEALTH_NOT_READY", "dapr"),
            ("/v1.0/healthz/outbound", "ERR_OUTBOUND_HEALTH_NOT_READY", "dapr outbound"),
        ] {
            router.get(RouterPath(path)) { _, _ -> Response in
                guard health.isReady else {
                    throw APIError(
                        errorCode: errorCode, rpcCode: .unavailable, httpStatus: 500, message: "\(what) is not ready",
                        reason: "HANGAR_NOT_READY")
                }
                return Response(status: .noContent)
            }
        }

        router.post("/v1.0/state/:store", use: save)
        router.put("/v1.0/state/:store", use: save)
        router.post("/v1.0/state/:store/bulk", use: bulkGet)
        router.put("/v1.0/state/:store/bulk", use: bulkGet)
        router.post("/v1.0/state/:store/transaction", use: transaction)
        router.put("/v1.0/state/:store/transaction", use: transaction)
        router.get("/v1.0/state/:store/:key", use: get)
        router.delete("/v1.0/state/:store/:key", use: delete)

        router.get("/v1.0/metadata", use: getMetadata)
        router.put("/v1.0/metadata/:key", use: setMetadata)
        router.post("/v1.0/shutdown", use: shutdown)
        router.put("/v1.0/shutdown", use: shutdown)

        // Dapr APIs this build does not serve answer 501 with a message naming them, never a bare 404.
        let unimplemented = [
            "publish", "invoke", "bindings", "secrets", "configuration", "actors", "workflows", "jobs",
            "conversation", "crypto", "subtlecrypto", "lock", "unlock",
        ]
        for version in ["v1.0", "v1.0-alpha1", "v1.0-beta1"] {
            for api in unimplemented {
                for method in [HTTPRequest.Method.get, .post, .put, .delete, .patch] {
                    router.on(RouterPath("/\(version)/\(api)/**"), method: method) { request, _ -> Response in
                        throw RequestError.unimplemented("the \(api) API (\(request.method) \(request.uri.path))")
                    }
                }
            }
        }
        return router
    }

    // MARK: Identity and decoding

    /// Runs a route for an admitted caller: the gate decides who is calling and takes a slot of its quotas, held
    /// until the route returns; the call is counted in the metrics under the Dapr gRPC method's name.
    func admitted(
        _ request: Request, _ context: HangarRequestContext, _ method: String,
        _ route: (Admission) async throws -> Response
    ) async throws -> Response {
        let started = NIODeadline.now()
        let admission = try runtime.gate.admit(
            // The first value, as Dapr reads it (and as the gRPC front-end does); joining repeated values would
            // make the two front-ends disagree.
            context.listener, token: request.headers[values: Self.tokenHeader].first, connection: context.channel)
        defer { admission.finish() }
        do {
            let response = try await route(admission)
            record(admission, method, .ok, started)
            return response
        } catch let error as any DaprAPIError {
            record(admission, method, error.rpcCode, started)
            throw error
        } catch {
            record(admission, method, .internal, started)
            throw error
        }
    }

    private func record(_ admission: Admission, _ method: String, _ code: RPCCode, _ started: NIODeadline) {
        runtime.metrics.recordRequest(
            app: admission.caller.app, method: method, transport: "http", code: code,
            duration: .nanoseconds((NIODeadline.now() - started).nanoseconds))
    }

    func parameter(_ context: HangarRequestContext, _ name: String) throws -> String {
        guard let raw = context.parameters.get(name) else { throw RequestError.malformed("missing \(name)") }
        return raw.removingPercentEncoding ?? raw
    }

    /// The body, refused with 413 before it is buffered when its declared length is over the caller's
    /// `maxRequestBytes`; a chunked body is refused once it passes the limit.
    func body(_ request: Request, _ admission: Admission) async throws -> ByteBuffer {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }) { try admission.checkSize(length) }
        do {
            return try await request.body.collect(upTo: admission.maxRequestBytes)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw admission.tooLarge(nil)
        } catch is NIOTooManyBytesError {
            throw admission.tooLarge(nil)
        }
    }

    func json(_ request: Request, _ admission: Admission) async throws -> Any {
        let buffer = try await body(request, admission)
        do {
            return try JSONSerialization.jsonObject(with: Data(buffer: buffer), options: [.fragmentsAllowed])
        } catch {
            throw RequestError.malformed("the request body is not valid JSON")
        }
    }

    static func queryMetadata(_ request: Request) -> [String: String] {
        var metadata: [String: String] = [:]
        for (key, value) in request.uri.queryParameters where key.hasPrefix("metadata.") {
            metadata[String(key.dropFirst("metadata.".count))] = String(value)
        }
        return metadata
    }

    static func concurrency(_ value: String?) throws -> StateConcurrency {
        switch value {
        case nil, "": .unspecified
        case "first-write": .firstWrite
        case "last-write": .lastWrite
        case let other?:
            throw RequestError.malformed("options.concurrency '\(other)' must be first-write or last-write")
        }
    }

    /// One `{key, value, etag, metadata, options}` object.
    static func stateItem(_ object: Any, at field: String) throws -> StateItemRequest {
        guard let object = object as? [String: Any] else { throw RequestError.malformed("\(field) must be an object") }
        guard let key = object["key"] as? String else { throw RequestError.malformed("\(field).key must be a string") }
        var item = StateItemRequest(key: key)
        if let value = object["value"], !(value is NSNull) {
            do {
                item.value = try JSONSerialization.data(
                    withJSONObject: value, options: [.fragmentsAllowed, .withoutEscapingSlashes])
            } catch {
                throw RequestError.malformed("\(field).value cannot be encoded")
            }
        }
        switch object["etag"] {
        case nil, is NSNull: break
        case let etag as String: item.etag = etag
        default: throw RequestError.malformed("\(field).etag must be a string")
        }
        if let metadata = object["metadata"], !(metadata is NSNull) {
            guard let metadata = metadata as? [String: Any] else {
                throw RequestError.malformed("\(field).metadata must be an object of strings")
            }
            item.metadata = metadata.mapValues { "\($0)" }
        }
        if let options = object["options"] as? [String: Any] {
            item.concurrency = try concurrency(options["concurrency"] as? String)
        }
        return item
    }

    /// A stored value as JSON: embedded as-is when it is JSON, else as a string.
    static func jsonValue(_ data: Data) -> Any {
        if let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) { return value }
        return String(decoding: data, as: UTF8.self)
    }

    static func jsonResponse(_ object: Any, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try JSONSerialization.data(
            withJSONObject: object, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        return Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: State

    @Sendable func save(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "SaveState") { admission in
            let caller = admission.caller
            let store = try parameter(context, "store")
            guard let array = try await json(request, admission) as? [Any] else {
                throw RequestError.malformed("the body must be a JSON array of state items")
            }
            let items = try array.enumerated().map { try Self.stateItem($1, at: "[\($0)]") }
            try await runtime.state.save(caller, store: store, items: items, on: context.channel.eventLoop).get()
            return Response(status: .noContent)
        }
    }

    @Sendable func get(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "GetState") { admission in
            let caller = admission.caller
            let store = try parameter(context, "store")
            let key = try parameter(context, "key")
            guard
                let value = try await runtime.state.get(caller, store: store, key: key, on: context.channel.eventLoop).get()
            else { return Response(status: .noContent) }
            var headers: HTTPFields = [.contentType: "application/json", .eTag: value.etag]
            for (name, field) in value.metadata {
                if let header = HTTPField.Name("metadata.\(name)") { headers[header] = field }
            }
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: value.data)))
        }
    }

    @Sendable func delete(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "DeleteState") { admission in
            let caller = admission.caller
            let store = try parameter(context, "store")
            let item = StateItemRequest(
                key: try parameter(context, "key"), etag: request.headers[.ifMatch], metadata: Self.queryMetadata(request),
                concurrency: try Self.concurrency(request.uri.queryParameters["concurrency"].map(String.init)))
            try await runtime.state.delete(caller, store: store, items: [item], on: context.channel.eventLoop).get()
            return Response(status: .noContent)
        }
    }

    @Sendable func bulkGet(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "GetBulkState") { admission in
            let caller = admission.caller
            let store = try parameter(context, "store")
            guard let object = try await json(request, admission) as? [String: Any], let keys = object["keys"] as? [String] else {
                throw RequestError.malformed("the body must be {\"keys\": [strings]}")
            }
            let values = try await runtime.state.bulkGet(caller, store: store, keys: keys, on: context.channel.eventLoop)
                .get()
            let items: [[String: Any]] = values.map { value in
                var item: [String: Any] = ["key": value.key]
                if let found = value.value {
                    item["data"] = Self.jsonValue(found.data)
                    item["etag"] = found.etag
                    if !found.metadata.isEmpty { item["metadata"] = found.metadata }
                }
                if let error = value.error { item["error"] = error }
                return item
            }
            return try Self.jsonResponse(items)
        }
    }

    @Sendable func transaction(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "ExecuteStateTransaction") { admission in
            let caller = admission.caller
            let store = try parameter(context, "store")
            guard let object = try await json(request, admission) as? [String: Any],
                let operations = object["operations"] as? [Any]
            else { throw RequestError.malformed("the body must be {\"operations\": [...]}") }
            let parsed = try operations.enumerated().map { index, entry -> StateTransactionOperation in
                guard let entry = entry as? [String: Any], let operation = entry["operation"] as? String,
                    let item = entry["request"]
                else {
                    throw RequestError.malformed("operations[\(index)] must be {\"operation\": ..., \"request\": {...}}")
                }
                return StateTransactionOperation(
                    operation: operation, item: try Self.stateItem(item, at: "operations[\(index)].request"))
            }
            try await runtime.state.transact(caller, store: store, operations: parsed, on: context.channel.eventLoop).get()
            return Response(status: .noContent)
        }
    }

    // MARK: Metadata

    @Sendable func getMetadata(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "GetMetadata") { admission in
            let info = runtime.metadata.get(admission.caller)
            return try Self.jsonResponse([
                "id": info.id,
                "runtimeVersion": info.runtimeVersion,
                "components": info.components.map {
                    ["name": $0.name, "type": $0.type, "version": $0.version, "capabilities": $0.capabilities]
                        as [String: Any]
                },
                "extended": info.extended,
                "enabledFeatures": info.enabledFeatures,
            ])
        }
    }

    @Sendable func setMetadata(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "SetMetadata") { admission in
            let caller = admission.caller
            let key = try parameter(context, "key")
            let value = String(buffer: try await body(request, admission))
            try runtime.metadata.set(caller, key: key, value: value)
            return Response(status: .noContent)
        }
    }

    @Sendable func shutdown(_ request: Request, _ context: HangarRequestContext) async throws -> Response {
        try await admitted(request, context, "Shutdown") { admission in
            // The node closes the app's listeners asynchronously, letting calls in flight (this one too) finish.
            runtime.metadata.shutdown(admission.caller)
            return Response(status: .noContent)
        }
    }
}
