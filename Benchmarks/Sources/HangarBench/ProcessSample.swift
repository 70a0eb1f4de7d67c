import Glibc

/// A process's CPU time, context switches and memory at one instant, read from `/proc/<pid>` (Linux only).
struct ProcessSample: Sendable {
    /// utime + stime (`/proc/<pid>/stat` fields 14 and 15), in clock ticks.
    var cpuTicks: Int
    /// Voluntary + involuntary context switches, summed over every thread.
    var contextSwitches: Int
    var threads: Int
    /// `VmRSS` and `VmHWM` (peak RSS), in KiB.
    var rssKiB: Int
    var peakRSSKiB: Int
    /// The anonymous part of RSS (heap, stacks: memory this process alone pays for), and the file-backed part
    /// (mapped binary and libraries, shared with every process mapping the same files), in KiB.
    var anonymousRSSKiB: Int
    var fileRSSKiB: Int

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
    static let ticksPerSecond = Int(sysconf(Int32(_SC_CLK_TCK)))

    /// CPU microseconds between two samples.
    static func cpuMicros(from start: ProcessSample, to end: ProcessSample) -> Double {
        Double(end.cpuTicks - start.cpuTicks) * 1_000_000 / Double(ticksPerSecond)
    }

    static func read(pid: pid_t) throws(ProcessSampleError) -> ProcessSample {
        guard let stat = readProcFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else {
            throw .unreadable(pid)
        }
        // After "pid (comm)" the fields start at field 3 (state), so field n is at index n - 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let utime = Int(fields[11]), let stime = Int(fields[12]) else {
            throw .unreadable(pid)
        }
        guard let status = readProcFile("/proc/\(pid)/status") else { throw .unreadable(pid) }
        var sample = ProcessSample(
            cpuTicks: utime + stime, contextSwitches: 0, threads: 0,
            rssKiB: statusValue(status, "VmRSS") ?? 0, peakRSSKiB: statusValue(status, "VmHWM") ?? 0,
            anonymousRSSKiB: statusValue(status, "RssAnon") ?? 0, fileRSSKiB: statusValue(status, "RssFile") ?? 0)
        for thread in threadIDs(pid) {
            guard let threadStatus = readProcFile("/proc/\(pid)/task/\(thread)/status") else { continue }
            sample.threads += 1
            sample.contextSwitches +=
                (statusValue(threadStatus, "voluntary_ctxt_switches") ?? 0)
                + (statusValue(threadStatus, "nonvoluntary_ctxt_switches") ?? 0)
        }
        return sample
    }

    /// This process's own user + system CPU time, in microseconds.
    static func ownCPUMicros() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let user = Double(usage.ru_utime.tv_sec) * 1_000_000 + Double(usage.ru_utime.tv_usec)
        let system = Double(usage.ru_stime.tv_sec) * 1_000_000 + Double(usage.ru_stime.tv_usec)
        return user + system
    }

    /// The number after `key:` in a `/proc/.../status` (or `smaps_rollup`) file.
    static func statusValue(_ status: String, _ key: String) -> Int? {
        for line in status.split(separator: "\n") where line.hasPrefix(key + ":") {
            return line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap {
                Int($0)
            }
        }
        return nil
    }

    private static func threadIDs(_ pid: pid_t) -> [String] {
        guard let directory = opendir("/proc/\(pid)/task") else { return [] }
        defer { closedir(directory) }
        var ids: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let first = name.utf8.first, first >= UInt8(ascii: "0"), first <= UInt8(ascii: "9") { ids.append(name) }
        }
        return ids
    }

    /// Reads a whole `/proc` file (their size reads as 0, so read until end of file).
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { _ = Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 { return nil }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
