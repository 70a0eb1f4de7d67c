import CSystemd
#if canImport(Glibc)
import Glibc
#endif

/// hangard and its service manager (systemd), through libsystemd. Outside systemd (no `NOTIFY_SOCKET`,
/// `LISTEN_FDS`, `WATCHDOG_USEC` or `JOURNAL_STREAM`) every call is a no-op or answers "none".
package enum Systemd {
    /// Sends state changes (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`; several separated by newlines).
    /// Returns whether a service manager was told.
    @discardableResult
    package static func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// Whether a service manager listens for notifications (`NOTIFY_SOCKET` is set).
    package static var isSupervised: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// How often the service manager expects `WATCHDOG=1` (`WatchdogSec=`), when it enabled the watchdog for this
    /// process; nil otherwise.
    package static var watchdogTimeout: Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(microseconds))
    }

    /// A listening socket passed by the service manager (socket activation).
    package struct InheritedSocket: Sendable, Hashable {
        package let descriptor: CInt
        /// Its `FileDescriptorName=`; nil when the unit gave none (systemd passes "unknown" then).
        package let name: String?
        /// The local TCP port, when it is an AF_INET/AF_INET6 socket.
        package let port: Int?
        /// `host:port` as bound, for logs.
        package let address: String

        package init(descriptor: CInt, name: String?, port: Int?, address: String) {
            self.descriptor = descriptor
            self.name = name
            self.port = port
            self.address = address
        }
    }

    /// Takes the listening sockets passed with `LISTEN_FDS`/`LISTEN_FDNAMES` (and unsets those variables, so
    /// that nothing started later inherits them). Descriptors that are not listening stream sockets are closed
    /// and reported in `rejected`.
    package static func takeInheritedSockets() -> (sockets: [InheritedSocket], rejected: [CInt]) {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return ([], []) }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        var sockets: [InheritedSocket] = []
        var rejected: [CInt] = []
        for index in 0..<count {
            let descriptor = SD_LISTEN_FDS_START + index
            guard sd_is_socket(descriptor, AF_UNSPEC, CInt(SOCK_STREAM.rawValue), 1) > 0 else {
                close(descriptor)
                rejected.append(descriptor)
                continue
            }
            var name = names?[Int(index)].map { String(cString: $0) }
            if name == "unknown" || name?.isEmpty == true { name = nil }
            let (port, address) = localAddress(descriptor)
            sockets.append(InheritedSocket(descriptor: descriptor, name: name, port: port, address: address))
        }
        return (sockets, rejected)
    }

    /// The port and printable address a socket is bound to.
    package static func localAddress(_ descriptor: CInt) -> (port: Int?, address: String) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let got = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard got == 0 else { return (nil, "fd \(descriptor)") }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        switch Int32(storage.ss_family) {
        case AF_INET, AF_INET6:
            let resolved = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    getnameinfo(
                        $0, length, &host, socklen_t(host.count), &service, socklen_t(service.count),
                        NI_NUMERICHOST | NI_NUMERICSERV)
                }
            }
            guard resolved == 0 else { return (nil, "fd \(descriptor)") }
            let hostText = String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let port = Int(String(decoding: service.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
            let printable = hostText.contains(":") ? "[\(hostText)]" : hostText
            return (port, "\(printable):\(port.map(String.init) ?? "?")")
        case AF_UNIX:
            return (nil, "unix socket (fd \(descriptor))")
        default:
            return (nil, "fd \(descriptor)")
        }
    }

    /// Whether standard error is the journal's stream for this service (`JOURNAL_STREAM` names its device and
    /// inode), so that logs should go to the journal natively, with priorities and fields.
    package static var standardErrorIsJournal: Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}
