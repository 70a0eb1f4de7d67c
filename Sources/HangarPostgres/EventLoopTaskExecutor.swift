import NIOCore

/// An event loop as a Swift `TaskExecutor`: a task started with it as its executor preference runs its nonisolated
/// code on that loop, and resumes there after each `await`.
///
/// Why: a store operation is an `async` body (postgres-nio's pool and queries are async) started from a call that
/// arrives on an event loop and answered on the same loop. On the global concurrent executor every step of it
/// (the start, the lease, each query's answer, the end) wakes another thread; run on the caller's loop, the steps
/// are queued on a thread that is awake anyway, and only the query's trip to its connection's loop (when that is
/// another one) crosses threads.
final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
