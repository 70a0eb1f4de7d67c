import Foundation

/// How long a process's threads ran on a CPU and how long they sat runnable waiting for one, summed over every
/// thread, from `/proc/<pid>/task/<tid>/schedstat` (Linux: nanoseconds on a CPU, nanoseconds waiting on a run
/// queue, time slices). The wait is the cost of sharing the cores: on an idle machine it stays near zero.
struct SchedulerSample: Sendable {
    var runNanoseconds: UInt64 = 0
    var waitNanoseconds: UInt64 = 0

    /// Threads that ended between two samples take their times with them, so a difference can only be trusted
    /// for processes whose threads live throughout (event loops, thread pools).
    static func read(pid: pid_t) -> SchedulerSample {
        var sample = SchedulerSample()
        let tasks = "/proc/\(pid)/task"
        for thread in (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? [] {
            guard let text = ProcessSample.readProcFile("\(tasks)/\(thread)/schedstat") else { continue }
            let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            guard fields.count >= 2, let run = UInt64(fields[0]), let wait = UInt64(fields[1]) else { continue }
            sample.runNanoseconds += run
            sample.waitNanoseconds += wait
        }
        return sample
    }

    /// Run-queue wait between two samples, in microseconds (0 if threads went away meanwhile).
    static func waitMicros(from start: SchedulerSample, to end: SchedulerSample) -> Double {
        end.waitNanoseconds >= start.waitNanoseconds ? Double(end.waitNanoseconds - start.waitNanoseconds) / 1000 : 0
    }
}
