/// A component whose backend is a server it reaches over the network (Redis, PostgreSQL), and which therefore can
/// fail after it opened: it says whether the backend answers now. The component pool reports the component `DOWN`
/// with this reason while it is not nil, and `UP` again once it is; calls still reach the component meanwhile,
/// which fails them fast (it must not queue them behind a server that is gone).
package protocol BackendHealthReporting: Sendable {
    /// Why the backend is unreachable now (the last connection attempt or health check failed), nil when it
    /// answers. Cheap and synchronous: read on every health report and metrics scrape.
    var backendProblem: String? { get }

    /// Connections open to the backend now (all of them: shared command connections and dedicated ones), for the
    /// metrics; nil when the component does not count them.
    var backendConnections: Int? { get }
}

extension BackendHealthReporting {
    package var backendConnections: Int? { nil }
}
