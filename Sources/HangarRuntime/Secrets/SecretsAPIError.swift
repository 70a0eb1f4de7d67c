import HangarComponents

/// The secrets building block's errors, with Dapr's codes, gRPC codes and HTTP statuses (Dapr's
/// `pkg/messages/predefined.go`). No message ever holds a secret's value: only store and secret names.
package enum SecretsAPIError {
    package static func notConfigured() -> APIError {
        APIError(
            errorCode: "ERR_SECRET_STORES_NOT_CONFIGURED", rpcCode: .failedPrecondition, httpStatus: 500,
            message: "secret store is not configured", reason: "DAPR_SECRET_STORES_NOT_CONFIGURED")
    }

    /// Dapr answers an unknown store with HTTP 401.
    package static func storeNotFound(_ name: String) -> APIError {
        APIError(
            errorCode: "ERR_SECRET_STORE_NOT_FOUND", rpcCode: .invalidArgument, httpStatus: 401,
            message: "failed finding secret store with key \(name)", reason: "DAPR_SECRET_STORE_NOT_FOUND",
            metadata: ["storeName": name])
    }

    /// The store exists but is not serving (its file cannot be read, ...); Dapr would not have loaded it.
    package static func unavailable(_ health: ComponentHealth) -> APIError {
        .notServing(health, what: "secret store", errorCode: "ERR_SECRET_STORE_NOT_READY", nameKey: "storeName")
    }

    /// The app's Configuration (`spec.secrets.scopes`) does not allow the secret; `why` says more when the app's
    /// Configuration cannot be used at all.
    package static func permissionDenied(_ secret: String, store: String, why: String? = nil) -> APIError {
        APIError(
            errorCode: "ERR_PERMISSION_DENIED", rpcCode: .permissionDenied, httpStatus: 403,
            message: "access denied by policy to get \"\(secret)\" from \"\(store)\""
                + (why.map { ": \($0)" } ?? ""),
            reason: "DAPR_SECRET_PERMISSION_DENIED", metadata: ["storeName": store])
    }

    package static func get(_ secret: String, store: String, _ error: any Error) -> APIError {
        APIError(
            errorCode: "ERR_SECRET_GET", rpcCode: .internal, httpStatus: 500,
            message: "failed getting secret with key \(secret) from secret store \(store): \(error)",
            reason: "DAPR_SECRET_GET", metadata: ["storeName": store])
    }

    package static func bulkGet(store: String, _ error: any Error) -> APIError {
        APIError(
            errorCode: "ERR_SECRET_GET", rpcCode: .internal, httpStatus: 500,
            message: "failed getting secrets from secret store \(store): \(error)", reason: "DAPR_SECRET_GET",
            metadata: ["storeName": store])
    }
}
