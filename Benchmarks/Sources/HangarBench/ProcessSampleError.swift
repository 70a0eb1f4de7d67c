import Glibc

/// Why `/proc` could not be read.
enum ProcessSampleError: Error, CustomStringConvertible {
    case unreadable(pid_t)

    var description: String {
        switch self {
        case .unreadable(let pid): "cannot read /proc/\(pid) (has the process exited?)"
        }
    }
}
