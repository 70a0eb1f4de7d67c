import Glibc

/// The open-file limit (`ulimit -n`) the bench and the servers it starts (they inherit it) run under.
enum FileDescriptorLimit {
    /// Raises the soft limit to `needed` when it is lower and the hard limit allows it; fails with what to do
    /// otherwise. `what` names the use, for the message.
    static func ensure(_ needed: Int, for what: String) throws {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        guard limit.rlim_cur < rlim_t(needed) else { return }
        if limit.rlim_max >= rlim_t(needed) {
            limit.rlim_cur = rlim_t(needed)
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
                TextTable.progress("raised the open-file limit to \(needed) for \(what)")
                return
            }
        }
        throw BenchError(
            "\(what) needs about \(needed) open files; ulimit -n is \(limit.rlim_cur) (hard \(limit.rlim_max)): "
                + "raise it, e.g. ulimit -n \(needed)")
    }
}
