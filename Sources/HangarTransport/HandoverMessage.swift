import Foundation

/// One message of the upgrade hand-over between a running hangard and its successor, on the running process's
/// control socket (`HandoverChannel`). Each message is one `SOCK_SEQPACKET` packet of JSON; a `sockets` message
/// carries its listening sockets' descriptors (`SCM_RIGHTS`) in the packet, in the order of its list, so that the
/// receiver knows which descriptor is which.
///
/// The conversation, successor (S) and running process (R):
/// 1. S → R `hello`: S has loaded and validated its own configuration (R validates nothing of it).
/// 2. R → S `offer`, then `sockets` packets (at most `HandoverMessage.socketsPerPacket` each) until one with
///    `last`: every listener R serves, as descriptors. R keeps serving on its own copies meanwhile.
/// 3. S → R `takeover`: S has the sockets and will serve them. R stops accepting (closes its copies, never
///    unlinking a socket file), drains its connections and closes its components.
/// 4. R → S `released`: R's components are closed (the SQLite writers among them), so S may open its own; R exits.
///
/// Either side may send `refused` instead, with the reason, and close; an end of the connection before `released`
/// means R is gone (its files are closed by the kernel then, too).
package enum HandoverMessage: Codable, Hashable, Sendable {
    case hello(pid: Int32, protocolVersion: Int)
    case offer(pid: Int32, drainTimeoutMilliseconds: Int64)
    case sockets([HandoverSocket], last: Bool)
    case takeover
    case released
    case refused(reason: String)

    /// The protocol this build speaks; a `hello` with another one is refused.
    package static let protocolVersion = 1
    /// Descriptors per packet: below Linux's `SCM_MAX_FD` (253).
    package static let socketsPerPacket = 200
    /// The largest packet a receiver accepts.
    package static let maxPacketBytes = 256 * 1024

    package func encoded() throws -> [UInt8] {
        Array(try JSONEncoder().encode(self))
    }

    package static func decode(_ bytes: some Collection<UInt8>) throws -> HandoverMessage {
        try JSONDecoder().decode(HandoverMessage.self, from: Data(bytes))
    }
}

/// What one handed-over descriptor is: an app's Unix socket, named by its file's path (the successor maps it to
/// its own socket layout), or a TCP listener, named by its role (`http`, `grpc`, `metrics`) with its address.
package enum HandoverSocket: Codable, Hashable, Sendable {
    case unix(path: String)
    case tcp(role: String, address: String)
}
