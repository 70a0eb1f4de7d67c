import NIOCore

/// When a caller stops: after a number of calls, or at a monotonic instant (nanoseconds, `NIODeadline` clock).
enum CallerStop: Sendable {
    case calls(Int)
    case deadline(UInt64)
}

/// What one caller saw: a latency sample (nanoseconds) per successful call, and its failures.
struct CallerOutcome: Sendable {
    var samples: [UInt64]
    var errors: Int
    var firstError: String?
}

/// One caller that issues its next call as soon as the previous one returns, entirely on its connection's event
/// loop (no hop to the concurrency pool between calls, so the client adds as little as it can to what it
/// measures). It cycles through pre-encoded requests, gRPC or HTTP. An error the server answered with (a gRPC or
/// HTTP status) is counted and the loop goes on; a closed connection or a malformed response ends the caller.
final class ClosedLoopCaller<Handler: UnaryClientHandler> {
    private let handler: Handler
    private let requests: [Handler.Request]
    private let stop: CallerStop
    private let done: EventLoopPromise<CallerOutcome>
    private var nextRequest = 0
    private var issued = 0
    private var startedAt: UInt64 = 0
    private var outcome = CallerOutcome(samples: [], errors: 0, firstError: nil)

    /// Call on the connection's event loop.
    init(handler: Handler, requests: [Handler.Request], stop: CallerStop, eventLoop: any EventLoop) {
        precondition(!requests.isEmpty, "a caller needs at least one request")
        self.handler = handler
        self.requests = requests
        self.stop = stop
        self.done = eventLoop.makePromise(of: CallerOutcome.self)
        if case .calls(let count) = stop { outcome.samples.reserveCapacity(count) }
    }

    /// Starts the loop; the future completes when the caller has stopped.
    func start() -> EventLoopFuture<CallerOutcome> {
        issueOrFinish()
        return done.futureResult
    }

    private func issueOrFinish() {
        let now = NIODeadline.now().uptimeNanoseconds
        let finished =
            switch stop {
            case .calls(let count): issued >= count
            case .deadline(let deadline): now >= deadline
            }
        if finished { return done.succeed(outcome) }
        issued += 1
        let request = requests[nextRequest]
        nextRequest = nextRequest + 1 == requests.count ? 0 : nextRequest + 1
        startedAt = now
        handler.call(request) { result in
            self.completed(result)
        }
    }

    private func completed(_ result: Result<ByteBuffer, Handler.Failure>) {
        let elapsed = NIODeadline.now().uptimeNanoseconds - startedAt
        switch result {
        case .success:
            outcome.samples.append(elapsed)
        case .failure(let error):
            outcome.errors += 1
            if outcome.firstError == nil { outcome.firstError = "\(error)" }
            if !error.isAnswer { return done.succeed(outcome) }
        }
        issueOrFinish()
    }
}
