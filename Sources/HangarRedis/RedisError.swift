/// Why a Redis command failed. Messages never contain credentials: AUTH's arguments are not echoed.
package enum RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The server answered with an error reply (`-ERR ...`, `-WRONGTYPE ...`, `-NOSCRIPT ...`): the command was
    /// read and refused; the connection is fine.
    case server(String)
    /// The connection closed, or could not be made; commands in flight on it may or may not have run.
    case connectionClosed(String)
    /// No answer before the command's deadline; the connection is closed (the replies after it would no longer
    /// match their commands), so the command may or may not have run.
    case deadlineExceeded
    /// The connection could not be set up: HELLO, AUTH or SELECT was refused.
    case handshake(String)

    package var description: String {
        switch self {
        case .server(let message): "Redis answered: \(message)"
        case .connectionClosed(let why): "the connection to Redis closed: \(why)"
        case .deadlineExceeded: "Redis did not answer in time"
        case .handshake(let why): "Redis refused the connection's setup: \(why)"
        }
    }
}
