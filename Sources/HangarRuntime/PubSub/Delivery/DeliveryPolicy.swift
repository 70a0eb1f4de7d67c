/// What a delivery loop does when a delivery fails, and how long one may take: the subscription's component's
/// inbound Resiliency policy (`NodeConfiguration.inboundPolicy`) where one applies, else the built-in rule of issue
/// 14 (a retry after 1 s, at most 10 attempts). Either way a message that runs out of retries, or whose failure the
/// policy's `matching` does not retry, goes to the dead-letter topic when the subscription has one, else is dropped
/// (logged and counted). Dapr without a policy delivers once and leaves redelivery to the broker, and with a
/// dead-letter topic dead-letters at the first RETRY (reference §3.8, §7.18); the built-in rule gives a transient
/// failure its retries either way. An inbound circuit breaker is resolved (`InboundPolicy`) but not applied yet.
///
/// A value resolved when the loop starts and again whenever the configuration is reloaded (`DeliveryLoop
/// .refreshPolicy()`), so that a changed Resiliency reaches running subscriptions without restarting them: the next
/// failure is decided by the new policy, with the message's attempts counted so far.
package struct DeliveryPolicy: Sendable, Hashable {
    package var retry: RetryPolicy
    /// The deadline of each delivery; nil: the sink's own (push: 60 s; streaming: the component's lease).
    package var timeout: Duration?
    /// Where the parts come from, for logs: `built-in` or the Resiliency policies' names.
    package var origin: String

    /// Issue 14's rule without a Resiliency policy: a retry after `retryDelay`, at most `DeliveryLoop.maxAttempts`.
    package static func builtIn(retryDelay: Duration) -> DeliveryPolicy {
        DeliveryPolicy(
            retry: RetryPolicy(kind: .constant, duration: retryDelay, maxRetries: DeliveryLoop.maxAttempts - 1),
            timeout: nil, origin: "built-in")
    }

    /// `inbound` where it gives a part, the built-in rule (with `retryDelay`) for the others.
    package init(_ inbound: InboundPolicy, builtInRetryDelay retryDelay: Duration) {
        self = .builtIn(retryDelay: retryDelay)
        if let retry = inbound.retry { self.retry = retry }
        // A zero timeout is none, as in Dapr.
        timeout = inbound.timeout.flatMap { $0 > .zero ? $0 : nil }
        let applied = inbound.origin.filter { !$0.hasPrefix("circuitBreaker ") }
        if !applied.isEmpty { origin = applied.joined(separator: ", ") }
    }

    init(retry: RetryPolicy, timeout: Duration?, origin: String) {
        self.retry = retry
        self.timeout = timeout
        self.origin = origin
    }

    /// What becomes of a message whose `attempt`th delivery failed.
    package enum Decision: Sendable, Hashable {
        /// Delivered again after the wait.
        case retry(after: Duration)
        /// Dead-lettered or dropped; the text says why, to follow "message N on T".
        case giveUp(String)
    }

    /// The decision after the `attempt`th delivery of a message failed with `code` (nil: the failure carries no
    /// status, e.g. a RETRY answer, which every policy retries). `random` (0...1) picks exponential back-off's
    /// jitter.
    package func afterFailure(attempt: Int, code: DeliveryFailureCode?, random: Double = .random(in: 0...1))
        -> Decision
    {
        guard retry.matching.retries(code) else {
            return .giveUp(
                "failed with \(code.map { "\($0)" } ?? ""), which its retry policy does not retry (\(origin))")
        }
        guard let delay = retry.delay(beforeRetry: max(1, attempt), random: random) else {
            return .giveUp("was not processed after \(attempt) attempts (\(origin))")
        }
        return .retry(after: delay)
    }

    /// Whether a message leased for its `attempt`th time may still be delivered (one whose earlier deliveries were
    /// never answered comes back with its count raised).
    package func allowsDelivery(attempt: Int) -> Bool {
        retry.maxAttempts.map { attempt <= $0 } ?? true
    }
}
