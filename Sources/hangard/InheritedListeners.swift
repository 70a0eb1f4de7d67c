import HangarSystemd
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// The TCP listeners handed over by systemd (socket activation), matched to hangard's own: by the socket's
/// `FileDescriptorName=` (`http`, `grpc`, `metrics`) when the unit names it, otherwise by its port against
/// `--http-listen`, `--grpc-listen` and `--metrics-listen`. One `hangard.socket` with two `ListenStream=` lines
/// therefore needs no names. A listener without an inherited socket is bound by hangard itself; a socket that
/// matches nothing is closed with a warning.
struct InheritedListeners: Sendable {
    var http: Systemd.InheritedSocket?
    var grpc: Systemd.InheritedSocket?
    var metrics: Systemd.InheritedSocket?

    static let none = InheritedListeners()

    enum Role: String, CaseIterable {
        case http, grpc, metrics
    }

    /// Sorts `sockets` into the three roles; returns what could not be placed, with the reason.
    static func match(
        _ sockets: [Systemd.InheritedSocket], http: ListenAddress?, grpc: ListenAddress?, metrics: ListenAddress?
    ) -> (InheritedListeners, unmatched: [(Systemd.InheritedSocket, String)]) {
        var result = InheritedListeners()
        var unmatched: [(Systemd.InheritedSocket, String)] = []
        let ports: [Role: Int] = [.http: http?.port, .grpc: grpc?.port, .metrics: metrics?.port].compactMapValues {
            $0 == 0 ? nil : $0
        }
        for socket in sockets {
            // The TCP listeners only: an inherited Unix or other socket would fail on TCP options.
            guard socket.port != nil else {
                unmatched.append((socket, "not a TCP socket"))
                continue
            }
            let role: Role?
            if let name = socket.name {
                role = Role(rawValue: name)
                if role == nil {
                    unmatched.append((socket, "its FileDescriptorName '\(name)' is not http, grpc or metrics"))
                    continue
                }
            } else {
                role = ports.first { $0.value == socket.port }?.key
                if role == nil {
                    unmatched.append(
                        (socket, "its port matches none of --http-listen, --grpc-listen, --metrics-listen"))
                    continue
                }
            }
            guard let role else { continue }
            if result[role] != nil {
                unmatched.append((socket, "a second socket for the \(role.rawValue) listener"))
                continue
            }
            result[role] = socket
        }
        return (result, unmatched)
    }

    subscript(role: Role) -> Systemd.InheritedSocket? {
        get {
            switch role {
            case .http: http
            case .grpc: grpc
            case .metrics: metrics
            }
        }
        set {
            switch role {
            case .http: http = newValue
            case .grpc: grpc = newValue
            case .metrics: metrics = newValue
            }
        }
    }

    /// Takes the sockets systemd passed, if any, and matches them; unmatched ones are closed and logged.
    static func take(http: ListenAddress?, grpc: ListenAddress?, metrics: ListenAddress?, logger: Logger)
        -> InheritedListeners
    {
        let (sockets, rejected) = Systemd.takeInheritedSockets()
        for descriptor in rejected {
            logger.warning(
                "inherited file descriptor is not a listening stream socket; closed",
                metadata: ["fd": "\(descriptor)"])
        }
        guard !sockets.isEmpty else { return .none }
        let (listeners, unmatched) = match(sockets, http: http, grpc: grpc, metrics: metrics)
        for (socket, reason) in unmatched {
            close(socket.descriptor)
            logger.warning(
                "inherited socket not used; closed",
                metadata: ["socket": "\(socket.address)", "reason": "\(reason)"])
        }
        for role in Role.allCases {
            guard let socket = listeners[role] else { continue }
            logger.info(
                "listening socket inherited from the service manager",
                metadata: ["listener": "\(role.rawValue)", "socket": "\(socket.address)"])
        }
        return listeners
    }
}
