import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

extension DaprHTTPAPI {
    /// The state API, on the runtime's `StateAPI` (shared with the gRPC front-end).
    static var state: [Route] {
        [
            Route([.POST, .PUT], "/v1.0/state/{store}", name: "SaveState", .call(save)),
            Route([.POST, .PUT], "/v1.0/state/{store}/bulk", name: "GetBulkState", .call(bulkGet)),
            Route([.POST, .PUT], "/v1.0/state/{store}/transaction", name: "ExecuteStateTransaction", .call(transact)),
            Route(.GET, "/v1.0/state/{store}/{key}", name: "GetState", .call(get)),
            Route(.DELETE, "/v1.0/state/{store}/{key}", name: "DeleteState", .call(delete)),
        ]
    }

    private static func get(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let store = request.parameters["store"]
        let key = request.parameters["key"]
        return request.runtime.state.get(request.caller, store: store, key: key, on: request.eventLoop).map { value in
            guard let value else { return HTTPResponse(status: .noContent) }
            var headers: HTTPHeaders = ["content-type": "application/json", "etag": value.etag]
            for (name, field) in value.metadata
            where HTTPHeaderField.isValidName(name) && HTTPHeaderField.isValidValue(field) {
                headers.add(name: "metadata.\(name)", value: field)
            }
            return HTTPResponse(status: .ok, headers: headers, body: ByteBuffer(bytes: value.data))
        }
    }

    private static func save(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        guard let array = try DaprHTTPJSON.parse(request.body) as? [Any] else {
            throw RequestError.malformed("the body must be a JSON array of state items")
        }
        let items = try array.enumerated().map { try stateItem($1, at: "[\($0)]") }
        return request.runtime.state.save(
            request.caller, store: request.parameters["store"], items: items, on: request.eventLoop
        ).map { DaprHTTPJSON.noContent }
    }

    private static func delete(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        let item = StateItemRequest(
            key: request.parameters["key"], etag: request.head.headers.first(name: "if-match"),
            metadata: request.target.metadata,
            concurrency: try concurrency(request.target.parameter("concurrency")))
        return request.runtime.state.delete(
            request.caller, store: request.parameters["store"], items: [item], on: request.eventLoop
        ).map { DaprHTTPJSON.noContent }
    }

    private static func bulkGet(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        guard let object = try DaprHTTPJSON.parse(request.body) as? [String: Any],
            let keys = object["keys"] as? [String]
        else {
            throw RequestError.malformed("the body must be {\"keys\": [strings]}")
        }
        return request.runtime.state.bulkGet(
            request.caller, store: request.parameters["store"], keys: keys, on: request.eventLoop
        ).flatMapThrowing { values in
            try DaprHTTPJSON.response(values.map(bulkItem))
        }
    }

    private static func transact(_ request: DaprHTTPRequest) throws -> Eventual<HTTPResponse> {
        guard let object = try DaprHTTPJSON.parse(request.body) as? [String: Any],
            let operations = object["operations"] as? [Any]
        else { throw RequestError.malformed("the body must be {\"operations\": [...]}") }
        let parsed = try operations.enumerated().map(transactionOperation)
        return request.runtime.state.transact(
            request.caller, store: request.parameters["store"], operations: parsed, on: request.eventLoop
        ).map { DaprHTTPJSON.noContent }
    }

    // MARK: JSON bodies

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
            item["data"] = DaprHTTPJSON.value(found.data)
            item["etag"] = found.etag
            if !found.metadata.isEmpty { item["metadata"] = found.metadata }
        }
        if let error = value.error { item["error"] = error }
        return item
    }
}
