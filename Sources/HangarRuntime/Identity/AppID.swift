/// An application identity inside a tenant: `(namespace, appId)`. Many processes may share one.
public struct AppID: Hashable, Sendable, CustomStringConvertible {
    public let namespace: String
    public let appId: String

    public init(namespace: String, appId: String) {
        self.namespace = namespace
        self.appId = appId
    }

    public var description: String { "\(namespace)/\(appId)" }
}

/// Who is calling: established once, at the connection (the app socket it came in on) or at the request (the API
/// token on TCP), and passed down as a value. Nothing below the gate derives identity again.
public struct Caller: Hashable, Sendable, CustomStringConvertible {
    package enum Transport: Hashable, Sendable {
        /// The app's own Unix socket: the connection *is* the app.
        case unixSocket
        /// A TCP listener, identified by `dapr-api-token` (or the development default's tokenless mapping).
        case tcp
    }

    package let app: AppID
    package let transport: Transport

    package init(app: AppID, transport: Transport) {
        self.app = app
        self.transport = transport
    }

    package var namespace: String { app.namespace }
    package var appId: String { app.appId }
    public var description: String { app.description }
}

/// How the connections of one listener are identified.
public enum ListenerIdentity: Sendable, Hashable {
    /// An app's own socket: every call on it is that app.
    case app(AppID)
    /// A TCP listener: every call carries `dapr-api-token`, checked by the gate.
    case tcp
}
