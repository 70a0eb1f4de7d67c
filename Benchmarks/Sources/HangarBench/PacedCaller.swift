import NIOCore

/// What one paced caller saw of the calls it issued inside its measured window (calls issued before the window,
/// its warm-up, are answered but not counted).
struct PacedOutcome: Sendable {
    /// Calls issued in the window.
    var issued = 0
    /// Send → response of every successful call issued in the window, in nanoseconds.
    var latencies: [UInt64] = []
    /// Calls refused with `RESOURCE_EXHAUSTED` (gRPC status 8): a quota said no.
    var refused = 0
    /// Calls that failed any other way (another gRPC status, a closed stream or connection, a malformed response).
    var failed = 0
    /// Calls still unanswered when the caller stopped waiting.
    var unanswered = 0
    var firstRefusal: String?
    var firstError: String?
    /// How late each call of the window left against its schedule, in nanoseconds: the client's own delay
    /// (timer granularity and a busy client event loop), which the latencies do not include.
    var issueLags: [UInt64] = []

    var succeeded: Int { latencies.count }

    /// The outcomes of several callers as one.
    static func merged(_ outcomes: [PacedOutcome]) -> PacedOutcome {
        var total = PacedOutcome()
        total.latencies.reserveCapacity(outcomes.reduce(0) { $0 + $1.latencies.count })
        total.issueLags.reserveCapacity(outcomes.reduce(0) { $0 + $1.issueLags.count })
        for outcome in outcomes {
            total.issued += outcome.issued
            total.latencies += outcome.latencies
            total.refused += outcome.refused
            total.failed += outcome.failed
            total.unanswered += outcome.unanswered
            total.issueLags += outcome.issueLags
            total.firstRefusal = total.firstRefusal ?? outcome.firstRefusal
            total.firstError = total.firstError ?? outcome.firstError
        }
        return total
    }
}

/// The monotonic instants (nanoseconds, `NIODeadline` clock) that frame a paced caller's work: it issues calls
/// from `start` until `end`, and counts those issued from `measureFrom` on.
struct PacedSchedule: Sendable {
    var start: UInt64
    var measureFrom: UInt64
    var end: UInt64
    /// How long after `end` the caller waits for the answers of the window's calls before counting them
    /// unanswered.
    var answerTimeout: UInt64 = 5_000_000_000

    /// Sleeps until a monotonic instant (`NIODeadline` clock).
    static func sleep(until instant: UInt64) async throws {
        let now = NIODeadline.now().uptimeNanoseconds
        if instant > now { try await Task.sleep(for: .nanoseconds(Int64(instant - now))) }
    }
}

/// An open-loop caller on one connection: a timer on the connection's event loop, firing at most once a
/// millisecond, issues every call that is due at `rate` calls a second, without waiting for earlier answers, so a
/// slow or refusing server cannot slow the offered load down (no coordinated omission). Calls are due at
/// `start + offset + k / rate`; callers sharing a total rate get offsets that interleave them evenly. The timer
/// sleeps until the next call is due instead of waking every millisecond: 20 connections ticking at 1 kHz made
/// the client, which shares the machine with hangard, use about a third more CPU.
///
/// It cycles through pre-encoded requests and records each call of the measured window: its latency from the
/// moment it was sent, and its outcome (OK, `RESOURCE_EXHAUSTED`, other error). With a `stampOffset`, each request
/// is sent with the instant it was sent written at that offset (`BenchRequests.stamp`: the `pubsub` scenario's
/// publishes). Every method runs on the connection's event loop.
final class PacedCaller {
    /// gRPC's `RESOURCE_EXHAUSTED`: how Hangar refuses a call over a quota.
    static let resourceExhausted = 8
    /// The shortest time between two ticks of the timer, in nanoseconds.
    static let tick: UInt64 = 1_000_000

    private let handler: GRPCClientHandler
    private let requests: [GRPCClientRequest]
    private let interval: Double
    private let offset: UInt64
    private let schedule: PacedSchedule
    private let eventLoop: any EventLoop
    private let stampOffset: Int?
    private let done: EventLoopPromise<PacedOutcome>
    private var nextRequest = 0
    /// Calls issued so far (warm-up included): the index of the next due call.
    private var issuedTotal = 0
    /// Calls of the window not answered yet.
    private var pendingInWindow = 0
    private var stopped = false
    private var finished = false
    private var outcome = PacedOutcome()

    /// Call on the connection's event loop. `rate` is in calls a second; `offset` (nanoseconds) shifts this
    /// caller's schedule; `stampOffset` is where the send instant goes in each request's message, if anywhere.
    init(
        handler: GRPCClientHandler, requests: [GRPCClientRequest], rate: Double, offset: UInt64,
        schedule: PacedSchedule, eventLoop: any EventLoop, stampOffset: Int? = nil
    ) {
        precondition(!requests.isEmpty && rate > 0, "a paced caller needs a request and a positive rate")
        self.handler = handler
        self.requests = requests
        self.interval = 1_000_000_000 / rate
        self.offset = offset
        self.schedule = schedule
        self.eventLoop = eventLoop
        self.stampOffset = stampOffset
        self.done = eventLoop.makePromise(of: PacedOutcome.self)
        let windowCalls = Int(Double(schedule.end - min(schedule.end, schedule.measureFrom)) / interval) + 1
        outcome.latencies.reserveCapacity(windowCalls)
        outcome.issueLags.reserveCapacity(windowCalls)
    }

    /// Starts one paced caller per connection (caller `i` cycling through `requests[i]`), sharing `rate` calls a
    /// second evenly and interleaved.
    static func start(
        on connections: [GRPCClientConnection], requests: [[GRPCClientRequest]], rate: Double, schedule: PacedSchedule,
        stampOffset: Int? = nil
    ) -> [EventLoopFuture<PacedOutcome>] {
        let perConnection = rate / Double(connections.count)
        return connections.enumerated().map { index, connection in
            let handler = connection.handler
            let callerRequests = requests[index]
            let offset = UInt64(Double(index) * 1_000_000_000 / rate)
            return connection.eventLoop.flatSubmit {
                PacedCaller(
                    handler: handler.value, requests: callerRequests, rate: perConnection, offset: offset,
                    schedule: schedule, eventLoop: connection.eventLoop, stampOffset: stampOffset
                ).start()
            }
        }
    }

    /// Starts the timer; the future completes once the window's calls are all answered (or timed out).
    func start() -> EventLoopFuture<PacedOutcome> {
        arm(at: max(schedule.start, NIODeadline.now().uptimeNanoseconds))
        return done.futureResult
    }

    /// The instant call number `index` is due.
    private func due(_ index: Int) -> UInt64 {
        schedule.start + offset + UInt64(Double(index) * interval)
    }

    private func arm(at instant: UInt64) {
        eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(instant)) {
            self.onTick(instant)
        }
    }

    private func onTick(_ instant: UInt64) {
        let now = NIODeadline.now().uptimeNanoseconds
        while true {
            let scheduled = due(issuedTotal)
            guard scheduled <= now, scheduled < schedule.end else { break }
            issue(scheduledAt: scheduled, now: now)
        }
        let next = due(issuedTotal)
        if next >= schedule.end {
            stop()
        } else {
            // At most one tick a millisecond, and none while no call is due: the next tick is when the next call is
            // due, but not before 1 ms after this one (then it issues every call that fell due meanwhile).
            arm(at: max(instant + Self.tick, next))
        }
    }

    private func issue(scheduledAt scheduled: UInt64, now: UInt64) {
        issuedTotal += 1
        var request = requests[nextRequest]
        nextRequest = nextRequest + 1 == requests.count ? 0 : nextRequest + 1
        let counted = scheduled >= schedule.measureFrom
        if counted {
            outcome.issued += 1
            outcome.issueLags.append(now - scheduled)
            pendingInWindow += 1
        }
        let sent = NIODeadline.now().uptimeNanoseconds
        if let stampOffset { BenchRequests.stamp(&request.message, at: stampOffset, instant: sent) }
        handler.call(request) { result in
            self.completed(result, sent: sent, counted: counted)
        }
    }

    private func completed(_ result: Result<ByteBuffer, GRPCCallError>, sent: UInt64, counted: Bool) {
        guard counted, !finished else { return }
        pendingInWindow -= 1
        switch result {
        case .success:
            outcome.latencies.append(NIODeadline.now().uptimeNanoseconds - sent)
        case .failure(.status(Self.resourceExhausted, let message)):
            outcome.refused += 1
            if outcome.firstRefusal == nil { outcome.firstRefusal = "grpc-status 8: \(message)" }
        case .failure(let error):
            outcome.failed += 1
            if outcome.firstError == nil { outcome.firstError = "\(error)" }
        }
        if stopped && pendingInWindow == 0 { finish() }
    }

    /// No more calls: finish once the window's calls are answered, or after the answer timeout.
    private func stop() {
        stopped = true
        if pendingInWindow == 0 { return finish() }
        _ = eventLoop.assumeIsolated().scheduleTask(
            deadline: NIODeadline.uptimeNanoseconds(schedule.end + schedule.answerTimeout)
        ) {
            self.finish()
        }
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        outcome.unanswered = pendingInWindow
        done.succeed(outcome)
    }
}
