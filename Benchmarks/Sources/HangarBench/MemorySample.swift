import Glibc

/// A process's memory at one instant, in KiB: its RSS from `/proc/<pid>/status`, and from
/// `/proc/<pid>/smaps_rollup` its PSS (each page divided by the number of processes mapping it: the honest share of
/// the shared libraries) and USS (its private pages, `Private_Clean` + `Private_Dirty`: what it alone costs).
struct MemorySample: Sendable {
    var rssKiB = 0
    var anonymousRSSKiB = 0
    var fileRSSKiB = 0
    var pssKiB = 0
    var ussKiB = 0
    var threads = 0

    static func read(pid: pid_t) throws(ProcessSampleError) -> MemorySample {
        guard let status = ProcessSample.readProcFile("/proc/\(pid)/status"),
            let rollup = ProcessSample.readProcFile("/proc/\(pid)/smaps_rollup"),
            let rss = ProcessSample.statusValue(status, "VmRSS"), let pss = ProcessSample.statusValue(rollup, "Pss")
        else { throw .unreadable(pid) }
        return MemorySample(
            rssKiB: rss, anonymousRSSKiB: ProcessSample.statusValue(status, "RssAnon") ?? 0,
            fileRSSKiB: ProcessSample.statusValue(status, "RssFile") ?? 0, pssKiB: pss,
            ussKiB: (ProcessSample.statusValue(rollup, "Private_Clean") ?? 0)
                + (ProcessSample.statusValue(rollup, "Private_Dirty") ?? 0),
            threads: ProcessSample.statusValue(status, "Threads") ?? 0)
    }

    /// Several processes' memory summed (RSS counts the pages they share once per process; PSS does not).
    static func sum(_ samples: [MemorySample]) -> MemorySample {
        samples.reduce(into: MemorySample()) { total, sample in
            total.rssKiB += sample.rssKiB
            total.anonymousRSSKiB += sample.anonymousRSSKiB
            total.fileRSSKiB += sample.fileRSSKiB
            total.pssKiB += sample.pssKiB
            total.ussKiB += sample.ussKiB
            total.threads += sample.threads
        }
    }
}
