import Glibc

/// Why a child process could not be started or did not become ready.
enum ManagedProcessError: Error, CustomStringConvertible {
    case spawn(String, Int32)
    case exited(String, Int32, String)
    case notReady(String, String, String)

    var description: String {
        switch self {
        case .spawn(let executable, let error):
            "cannot start \(executable): \(String(cString: strerror(error)))"
        case .exited(let name, let status, let log):
            "\(name) exited with status \(status) before it was ready; its log ends with:\n\(log)"
        case .notReady(let name, let marker, let log):
            "\(name) did not log '\(marker)' in time; its log ends with:\n\(log)"
        }
    }
}
