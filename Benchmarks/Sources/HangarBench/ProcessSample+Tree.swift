import Glibc

extension ProcessSample {
    /// The CPU time of a process and its children, in microseconds: its own utime + stime, its reaped children's
    /// (cutime + cstime), and the utime + stime of its children still running. For a server that forks a process
    /// per connection (PostgreSQL's postmaster and its backends) this is the whole server's CPU; for one that does
    /// not (redis-server) it is the process's own. nil when the process cannot be read.
    static func treeCPUMicros(pid: pid_t) -> Double? {
        guard let own = statFields(pid), own.count > 14, let utime = Int(own[11]), let stime = Int(own[12]),
            let cutime = Int(own[13]), let cstime = Int(own[14])
        else { return nil }
        var ticks = utime + stime + cutime + cstime
        if let directory = opendir("/proc") {
            defer { closedir(directory) }
            while let entry = readdir(directory) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
                }
                guard let child = pid_t(name), child != pid, let fields = statFields(child), fields.count > 12,
                    pid_t(fields[1]) == pid, let childUser = Int(fields[11]), let childSystem = Int(fields[12])
                else { continue }
                ticks += childUser + childSystem
            }
        }
        return Double(ticks) * 1_000_000 / Double(ticksPerSecond)
    }

    /// The fields of `/proc/<pid>/stat` after "pid (comm)": index n - 3 holds field n (so `[1]` is the parent's
    /// pid, `[11]` utime).
    private static func statFields(_ pid: pid_t) -> [Substring]? {
        guard let stat = readProcFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }
}
