import HangarComponents

/// The state building block's errors, with Dapr's codes.
package enum StateAPIError {
    /// Which operation failed; Dapr's error code depends on it.
    package enum Operation: String, Sendable {
        case get = "ERR_STATE_GET"
        case bulkGet = "ERR_STATE_BULK_GET"
        case save = "ERR_STATE_SAVE"
        case delete = "ERR_STATE_DELETE"
        case transaction = "ERR_STATE_TRANSACTION"

        var verb: String {
            switch self {
            case .get, .bulkGet: "getting state"
            case .save: "saving state"
            case .delete: "deleting state"
            case .transaction: "executing state transaction"
            }
        }
    }

    package static func storeNotFound(_ name: String) -> APIError {
        APIError(
            errorCode: "ERR_STATE_STORE_NOT_FOUND", rpcCode: .invalidArgument, httpStatus: 400,
            message: "state store \(name) is not found", reason: "DAPR_STATE_NOT_FOUND",
            metadata: ["storeName": name])
    }

    /// The store exists but is not serving: still initialising, or DOWN after a failed initialisation.
    package static func unavailable(_ health: ComponentHealth) -> APIError {
        .notServing(health, what: "state store", errorCode: "ERR_STATE_STORE_NOT_READY", nameKey: "storeName")
    }

    package static func notConfigured() -> APIError {
        APIError(
            errorCode: "ERR_STATE_STORE_NOT_CONFIGURED", rpcCode: .failedPrecondition, httpStatus: 500,
            message: "state store is not configured", reason: "DAPR_STATE_NOT_CONFIGURED")
    }

    package static func notSupported(_ store: String, _ feature: String) -> APIError {
        APIError(
            errorCode: "ERR_STATE_STORE_NOT_SUPPORTED", rpcCode: .unimplemented, httpStatus: 500,
            message: "state store \(store) doesn't support \(feature)", reason: "DAPR_STATE_NOT_SUPPORTED",
            metadata: ["storeName": store, "feature": feature])
    }

    package static func unsupportedOperation(_ operation: String) -> APIError {
        APIError(
            errorCode: "ERR_NOT_SUPPORTED_STATE_OPERATION", rpcCode: .invalidArgument, httpStatus: 400,
            message: "operation type \(operation) not supported (use upsert or delete)",
            reason: "DAPR_STATE_TRANSACTION_OPERATION_NOT_SUPPORTED")
    }

    /// Maps a store's error for an operation on `store`.
    package static func from(_ error: any Error, operation: Operation, store: String) -> APIError {
        if let error = error as? APIError { return error }
        let prefix = "failed \(operation.verb) in state store \(store)"
        switch error as? StateStoreError {
        case .etagMismatch(let key):
            return APIError(
                errorCode: operation.rawValue, rpcCode: .aborted, httpStatus: 409,
                message: "\(prefix): possible etag mismatch for key \(Names.quoted(StateAPI.userKey(key)))",
                reason: "DAPR_STATE_ETAG_MISMATCH", metadata: ["storeName": store])
        case .invalidETag(let key, _):
            return APIError(
                errorCode: operation.rawValue, rpcCode: .invalidArgument, httpStatus: 400,
                // The store's form of the ETag is not shown: it is the caller's ETag unsealed (see ETagSealer).
                message: "\(prefix): invalid etag for key \(Names.quoted(StateAPI.userKey(key)))",
                reason: "DAPR_STATE_ETAG_INVALID", metadata: ["storeName": store])
        case .backend(let message):
            return APIError(
                errorCode: operation.rawValue, rpcCode: .internal, httpStatus: 500, message: "\(prefix): \(message)",
                reason: "DAPR_STATE_BACKEND_ERROR", metadata: ["storeName": store])
        case .unavailable(let message):
            // Dapr answers a backend it cannot reach with its ERR_STATE_* code and HTTP 500; gRPC says UNAVAILABLE,
            // so that clients and resiliency policies know a retry may succeed.
            return APIError(
                errorCode: operation.rawValue, rpcCode: .unavailable, httpStatus: 500,
                message: "\(prefix): \(message)", reason: "DAPR_STATE_BACKEND_UNAVAILABLE",
                metadata: ["storeName": store])
        case .invalidKey(let key, let reason):
            return APIError(
                errorCode: "ERR_MALFORMED_REQUEST", rpcCode: .invalidArgument, httpStatus: 400,
                message: "\(prefix): key \(Names.quoted(StateAPI.userKey(key))) cannot be stored: \(reason)",
                reason: "DAPR_STATE_ILLEGAL_KEY", metadata: ["storeName": store])
        case .byteLimitExceeded(let partition, let usage, let limit):
            return QuotaError.stateBytes(usage: usage, limit: limit, namespace: partition, store: store)
        case .closed:
            return APIError(
                errorCode: operation.rawValue, rpcCode: .unavailable, httpStatus: 503,
                message: "\(prefix): the store is closed", reason: "DAPR_STATE_STORE_CLOSED",
                metadata: ["storeName": store])
        case nil:
            return APIError(
                errorCode: operation.rawValue, rpcCode: .internal, httpStatus: 500, message: "\(prefix): \(error)",
                reason: "DAPR_STATE_BACKEND_ERROR", metadata: ["storeName": store])
        }
    }
}
