import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

/// Dapr's HTTP API (`/v1.0/...`) for one listener: decodes requests into runtime calls and encodes their results.
/// Dapr semantics live in the runtime's building blocks, shared with the gRPC front-end.
///
/// The gate admits a request at its head (who is calling, quotas, the largest body it may send), before the body
/// is read; the admission's slot is held until the response is built. Calls to non-blocking components complete
/// within the read that brought the request's end.
struct DaprHTTPResponder: HTTPResponder {
    struct Call: Sendable {
        let route: DaprHTTPRoute
        let target: RequestTarget
        let admission: Admission
        let started: NIODeadline
    }

    let runtime: Runtime
    let listener: ListenerIdentity

    func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Call> {
        let target = RequestTarget(head.uri)
        let route = DaprHTTPRoute.match(head.method, path: target.path)
        switch route {
        case .health(let outbound):
            // No token needed (the SDK probes /healthz/outbound before it has a connection). 204 once every
            // listener is up and every component has made its first initialisation attempt, 500 before, as in
            // Dapr. A DOWN component does not fail it: the node serves its other tenants.
            guard runtime.health.isReady else {
                return .respond(
                    DaprHTTPError.response(
                        APIError(
                            errorCode: outbound ? "ERR_OUTBOUND_HEALTH_NOT_READY" : "ERR_HEALTH_NOT_READY",
                            rpcCode: .unavailable, httpStatus: 500,
                            message: "\(outbound ? "dapr outbound" : "dapr") is not ready", reason: "HANGAR_NOT_READY")))
            }
            return .respond(HTTPResponse(status: .noContent))
        case .unimplemented(let api):
            return .respond(
                DaprHTTPError.response(
                    RequestError.unimplemented(
                        "the \(api) API (\(head.method) \(RequestError.quotedPath(target.path)))")))
        case .notFound:
            return .respond(DaprHTTPError.response(DaprHTTPError.notFound(head.method, target.path)))
        default:
            break
        }
        do {
            // The first token value, as Dapr reads it (and as the gRPC front-end does).
            let admission = try runtime.gate.admit(
                listener, token: head.headers.first(name: "dapr-api-token"), connection: channel)
            return .readBody(
                Call(route: route, target: target, admission: admission, started: .now()),
                limit: admission.maxRequestBytes)
        } catch {
            return .respond(DaprHTTPError.response(error))
        }
    }

    func respond(to call: Call, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
        -> Eventual<HTTPResponse>
    {
        let outcome: Eventual<HTTPResponse>
        do {
            outcome = try run(call, head, body, channel.eventLoop)
        } catch {
            outcome = .failure(error)
        }
        switch outcome {
        case .ready(let result):
            return .success(finish(call, result))
        case .later(let future):
            let promise = channel.eventLoop.makePromise(of: HTTPResponse.self)
            future.whenComplete { promise.succeed(self.finish(call, $0)) }
            return .later(promise.futureResult)
        }
    }

    func tooLarge(_ call: Call, declaredLength: Int?) -> HTTPResponse {
        finish(call, .failure(call.admission.tooLarge(declaredLength)))
    }

    func abandon(_ call: Call) {
        call.admission.finish()
    }

    /// Returns the admission's slot, counts the call in the metrics under the Dapr gRPC method's name, and turns a
    /// failure into Dapr's error body.
    private func finish(_ call: Call, _ result: Result<HTTPResponse, any Error>) -> HTTPResponse {
        call.admission.finish()
        let code: RPCCode
        let response: HTTPResponse
        switch result {
        case .success(let value):
            (code, response) = (.ok, value)
        case .failure(let error as any DaprAPIError):
            (code, response) = (error.rpcCode, DaprHTTPError.response(error))
        case .failure(let error):
            (code, response) = (.internal, DaprHTTPError.response(error))
        }
        runtime.metrics.recordRequest(
            app: call.admission.caller.app, method: call.route.methodName, transport: "http", code: code,
            duration: .nanoseconds((NIODeadline.now() - call.started).nanoseconds))
        return response
    }

    // MARK: Routes

    private func run(_ call: Call, _ head: HTTPRequestHead, _ body: ByteBuffer, _ eventLoop: any EventLoop) throws
        -> Eventual<HTTPResponse>
    {
        let caller = call.admission.caller
        let state = runtime.state
        switch call.route {
        case .getState(let store, let key):
            return state.get(caller, store: store, key: key, on: eventLoop).map { value in
                guard let value else { return HTTPResponse(status: .noContent) }
                var headers: HTTPHeaders = ["content-type": "application/json", "etag": value.etag]
                for (name, field) in value.metadata
                where HTTPHeaderField.isValidName(name) && HTTPHeaderField.isValidValue(field) {
                    headers.add(name: "metadata.\(name)", value: field)
                }
                return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(bytes: value.data))
            }
        case .saveState(let store):
            guard let array = try Self.json(body) as? [Any] else {
                throw RequestError.malformed("the body must be a JSON array of state items")
            }
            let items = try array.enumerated().map { try Self.stateItem($1, at: "[\($0)]") }
            return state.save(caller, store: store, items: items, on: eventLoop).map { Self.noContent }
        case .deleteState(let store, let key):
            let item = StateItemRequest(
                key: key, etag: head.headers.first(name: "if-match"), metadata: call.target.metadata,
                concurrency: try Self.concurrency(call.target.parameter("concurrency")))
            return state.delete(caller, store: store, items: [item], on: eventLoop).map { Self.noContent }
        case .bulkGetState(let store):
            guard let object = try Self.json(body) as? [String: Any], let keys = object["keys"] as? [String] else {
                throw RequestError.malformed("the body must be {\"keys\": [strings]}")
            }
            return state.bulkGet(caller, store: store, keys: keys, on: eventLoop).flatMapThrowing { values in
                try Self.jsonResponse(values.map(Self.bulkItem))
            }
        case .stateTransaction(let store):
            guard let object = try Self.json(body) as? [String: Any], let operations = object["operations"] as? [Any]
            else { throw RequestError.malformed("the body must be {\"operations\": [...]}") }
            let parsed = try operations.enumerated().map(Self.transactionOperation)
            return state.transact(caller, store: store, operations: parsed, on: eventLoop).map { Self.noContent }
        case .getMetadata:
            let info = runtime.metadata.get(caller)
            return .success(
                try Self.jsonResponse([
                    "id": info.id,
                    "runtimeVersion": info.runtimeVersion,
                    "components": info.components.map {
                        ["name": $0.name, "type": $0.type, "version": $0.version, "capabilities": $0.capabilities]
                            as [String: Any]
                    },
                    "extended": info.extended,
                    "enabledFeatures": info.enabledFeatures,
                ]))
        case .setMetadata(let key):
            try runtime.metadata.set(caller, key: key, value: String(buffer: body))
            return .success(Self.noContent)
        case .shutdown:
            // The node closes the app's listeners asynchronously, letting calls in flight (this one too) finish.
            runtime.metadata.shutdown(caller)
            return .success(Self.noContent)
        case .health, .unimplemented, .notFound:
            throw RequestError.internal("route \(call.route) is answered at its head")
        }
    }

    static let noContent = HTTPResponse(status: .noContent)

    // MARK: JSON

    static func json(_ body: ByteBuffer) throws(APIError) -> Any {
        do {
            return try JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed])
        } catch {
            throw RequestError.malformed("the request body is not valid JSON")
        }
    }

    static func concurrency(_ value: String?) throws(APIError) -> StateConcurrency {
        switch value {
        case nil, "": .unspecified
        case "first-write": .firstWrite
        case "last-write": .lastWrite
        case let other?:
            throw RequestError.malformed("options.concurrency '\(other)' must be first-write or last-write")
        }
    }

    /// One `{key, value, etag, metadata, options}` object.
    static func stateItem(_ object: Any, at field: String) throws(APIError) -> StateItemRequest {
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

    /// `operations[index]`: `{"operation": "upsert"|"delete", "request": {state item}}`.
    static func transactionOperation(_ index: Int, _ entry: Any) throws(APIError) -> StateTransactionOperation {
        guard let entry = entry as? [String: Any], let operation = entry["operation"] as? String,
            let item = entry["request"]
        else {
            throw RequestError.malformed("operations[\(index)] must be {\"operation\": ..., \"request\": {...}}")
        }
        return StateTransactionOperation(
            operation: operation, item: try stateItem(item, at: "operations[\(index)].request"))
    }

    /// One item of a bulk get's response.
    static func bulkItem(_ value: BulkStateValue) -> [String: Any] {
        var item: [String: Any] = ["key": value.key]
        if let found = value.value {
            item["data"] = jsonValue(found.data)
            item["etag"] = found.etag
            if !found.metadata.isEmpty { item["metadata"] = found.metadata }
        }
        if let error = value.error { item["error"] = error }
        return item
    }

    /// A stored value as JSON: embedded as-is when it is JSON, else as a string.
    static func jsonValue(_ data: Data) -> Any {
        if let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) { return value }
        return String(decoding: data, as: UTF8.self)
    }

    static func jsonResponse(_ object: Any) throws -> HTTPResponse {
        let data = try JSONSerialization.data(
            withJSONObject: object, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        return HTTPResponse(
            status: .ok, headers: ["content-type": "application/json"], body: ByteBuffer(bytes: data))
    }
}

/// RFC 9110 §5.1 and §5.5 checks for header fields built from stored data, so that nothing a caller stored can
/// split a response (the encoder's own validation is off).
enum HTTPHeaderField {
    /// A token: visible ASCII without delimiters.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                byte > 0x20 && byte < 0x7F && !"\"(),/:;<=>?@[\\]{}".utf8.contains(byte)
            }
    }

    /// No control characters other than horizontal tab (so no CR, LF or NUL).
    static func isValidValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { byte in byte == 0x09 || (byte >= 0x20 && byte != 0x7F) }
    }
}
