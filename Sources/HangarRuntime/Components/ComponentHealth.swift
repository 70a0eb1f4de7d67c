package import Foundation

/// One component's health at a moment.
package struct ComponentHealth: Sendable, Hashable {
    package var name: String
    /// The namespace of a tenant's own component; nil for a shared one.
    package var namespace: String?
    package var type: String
    package var status: ComponentStatus
    /// Why it is DOWN (the last attempt's error).
    package var error: String?
    /// Initialisation attempts so far.
    package var attempts: Int
    /// When the status last changed.
    package var since: Date
}

extension APIError {
    /// A component that exists but is not serving (still initialising, or DOWN), as every block answers it: its
    /// `what` ("state store"), its status and reason, under the block's `errorCode` and with the component's name
    /// under `nameKey` in the error's metadata.
    static func notServing(
        _ health: ComponentHealth, what: String, errorCode: String, nameKey: String
    ) -> APIError {
        let state =
            health.status == .initialising
            ? "is initialising"
            : "is DOWN: \(health.error ?? "not initialised"); initialisation is retried"
        return APIError(
            errorCode: errorCode, rpcCode: .unavailable, httpStatus: 503,
            message: "\(what) \(health.name) \(state)", reason: "HANGAR_COMPONENT_\(health.status.rawValue)",
            metadata: [nameKey: health.name, "status": health.status.rawValue])
    }
}
