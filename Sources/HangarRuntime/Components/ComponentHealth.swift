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
