import Foundation
import HangarRuntime
import Logging

/// Where an app's sockets live: `<root>/<namespace>/<appId>/dapr-<appId>-{grpc,http}.socket`, Dapr's own file
/// names, so a pod mounts its app directory at `/var/run/dapr-sockets` exactly as with Dapr's UDS mode.
struct SocketLayout: Sendable {
    let root: String

    /// The longest path a Unix socket address can hold (sun_path is 108 bytes, NUL included).
    static let maxSocketPath = 107

    func directory(_ app: AppID) -> String { "\(root)/\(app.namespace)/\(app.appId)" }
    func grpcSocket(_ app: AppID) -> String { "\(directory(app))/dapr-\(app.appId)-grpc.socket" }
    func httpSocket(_ app: AppID) -> String { "\(directory(app))/dapr-\(app.appId)-http.socket" }
    /// Where the app serves its app channel when its `appChannel` gives no address: `app-<appId>-grpc.socket` (or
    /// `-http.socket`) in its directory, which the app creates and hangard never removes.
    func appChannelSocket(_ app: AppID, _ channel: AppChannelSpec.ChannelProtocol) -> String {
        "\(directory(app))/app-\(app.appId)-\(channel.rawValue).socket"
    }

    /// Refuses a configuration whose socket paths would not fit in a Unix socket address.
    func validate(_ configuration: NodeConfiguration) throws(ConfigurationError) {
        for (app, _, tenant) in configuration.apps {
            let path = grpcSocket(app)
            if path.utf8.count > Self.maxSocketPath {
                throw ConfigurationError(
                    path: tenant.source, field: "spec.apps[\(app.appId)]",
                    message:
                        "socket path '\(path)' is longer than \(Self.maxSocketPath) bytes; use a shorter --socket-root")
            }
        }
    }

    /// Creates the app's directory (mode 0770, owned by its first uid/gid when given) and removes stale sockets, except
    /// those in `keeping` (served on, handed over by the process this one takes over from).
    func prepare(_ app: AppID, spec: AppSpec, keeping: Set<String> = [], logger: Logger) throws {
        let fileManager = FileManager.default
        try fileManager.createDirectory(
            atPath: "\(root)/\(app.namespace)", withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755])
        let directory = directory(app)
        try fileManager.createDirectory(atPath: directory, withIntermediateDirectories: true)
        guard chmod(directory, 0o770) == 0 else { throw SocketLayoutError.system("chmod \(directory)", errno) }
        if let uid = spec.uids.first ?? Optional(getuid()), spec.uids.first != nil || spec.gids.first != nil {
            let gid = spec.gids.first ?? getgid()
            if chown(directory, uid, gid) != 0 {
                logger.warning(
                    "cannot hand the app directory to its uid/gid",
                    metadata: ["path": "\(directory)", "uid": "\(uid)", "gid": "\(gid)", "errno": "\(errno)"])
            }
        }
        for path in [grpcSocket(app), httpSocket(app)] where !keeping.contains(path) { removeSocket(path) }
    }

    /// Hands the app's directory and sockets to its (changed) uid/gid.
    func reown(_ app: AppID, spec: AppSpec, logger: Logger) throws {
        let directory = directory(app)
        let uid = spec.uids.first ?? getuid()
        let gid = spec.gids.first ?? getgid()
        for path in [directory, grpcSocket(app), httpSocket(app)] where chown(path, uid, gid) != 0 {
            logger.warning(
                "cannot hand the app's files to its uid/gid",
                metadata: ["path": "\(path)", "uid": "\(uid)", "gid": "\(gid)", "errno": "\(errno)"])
        }
    }

    /// Makes a bound socket usable by the app's group, and hands it to the app's uid/gid when configured.
    func publish(_ path: String, spec: AppSpec) {
        _ = chmod(path, 0o660)
        if spec.uids.first != nil || spec.gids.first != nil {
            _ = chown(path, spec.uids.first ?? getuid(), spec.gids.first ?? getgid())
        }
    }

    /// Removes a socket file; anything that is not a socket is left alone, and so is a socket other than `inode`
    /// when given (another hangard's, bound at the path since).
    func removeSocket(_ path: String, inode: ino_t? = nil) {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFSOCK else { return }
        if let inode, info.st_ino != inode { return }
        unlink(path)
    }

    /// The inode of the socket file at `path`, nil when there is none.
    func inode(_ path: String) -> ino_t? {
        var info = stat()
        guard lstat(path, &info) == 0 else { return nil }
        return info.st_ino
    }
}

enum SocketLayoutError: Error, CustomStringConvertible {
    case system(String, Int32)

    var description: String {
        switch self {
        case .system(let what, let code): "\(what): \(String(cString: strerror(code)))"
        }
    }
}
