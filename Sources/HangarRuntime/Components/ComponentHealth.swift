public import Foundation

/// One component's health at a moment.
public struct ComponentHealth: Sendable, Hashable {
    public var name: String
    /// The namespace of a tenant's own component; nil for a shared one.
    public var namespace: String?
    public var type: String
    public var status: ComponentStatus
    /// Why it is DOWN (the last attempt's error).
    public var error: String?
    /// Initialisation attempts so far.
    public var attempts: Int
    /// When the status last changed.
    public var since: Date
}
