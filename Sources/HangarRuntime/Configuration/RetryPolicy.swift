/// A retry policy of a `Resiliency` resource (`spec.policies.retries.<name>`), with Dapr's defaults
/// (`dapr/kit` `retry.DefaultConfig`, `cenkalti/backoff` v4):
///
/// ```yaml
/// retries:
///   pubsubRetry:
///     policy: constant        # constant (default) | exponential
///     duration: 5s            # constant: the wait between attempts (default 5s)
///     maxInterval: 60s        # exponential: the longest wait (default 60s)
///     maxRetries: 10          # retries after the first attempt; -1 (default): no limit
///     matching:               # which failures that carry a status are retried (default: all)
///       httpStatusCodes: "429,500-599"
///       gRPCStatusCodes: "1-4,8-11,13,14"
/// ```
///
/// Exponential back-off is Dapr's: the n-th retry waits `min(initialInterval × 1.5^(n−1), maxInterval)` with ±50 %
/// jitter, and retries stop once the waits add up past 15 minutes (`maxElapsedTime`) even when `maxRetries` is -1.
/// `initialInterval` (default 500 ms) is accepted as a Hangar extension: Dapr's resource has no such field and
/// always starts at 500 ms.
package struct RetryPolicy: Sendable, Hashable {
    package enum Kind: String, Sendable, Hashable {
        case constant, exponential
    }

    package var kind: Kind = .constant
    package var duration: Duration = .seconds(5)
    package var initialInterval: Duration = .milliseconds(500)
    package var maxInterval: Duration = .seconds(60)
    /// Retries after the first attempt; negative: no limit.
    package var maxRetries: Int = -1
    package var matching = RetryMatching()

    /// Exponential back-off's fixed parameters (Dapr does not let a resource set them).
    package static let multiplier = 1.5
    package static let randomizationFactor = 0.5
    package static let maxElapsedTime: Duration = .seconds(15 * 60)

    package init(
        kind: Kind = .constant, duration: Duration = .seconds(5), initialInterval: Duration = .milliseconds(500),
        maxInterval: Duration = .seconds(60), maxRetries: Int = -1, matching: RetryMatching = RetryMatching()
    ) {
        self.kind = kind
        self.duration = duration
        self.initialInterval = initialInterval
        self.maxInterval = maxInterval
        self.maxRetries = maxRetries
        self.matching = matching
    }

    /// How many deliveries a message gets at most; nil: no limit.
    package var maxAttempts: Int? { maxRetries < 0 ? nil : maxRetries + 1 }

    /// The wait before the `retry`th retry (1: after the first attempt failed), without jitter.
    package func nominalInterval(beforeRetry retry: Int) -> Duration {
        switch kind {
        case .constant:
            return duration
        case .exponential:
            var interval = initialInterval
            var step = 1
            while step < retry, interval < maxInterval {
                interval = interval * Self.multiplier
                step += 1
            }
            return min(interval, maxInterval)
        }
    }

    /// The sum of the nominal waits of the retries before the `retry`th (exponential back-off), in a few steps
    /// however large `retry` is: once the wait reaches `maxInterval` the rest is a product.
    func nominalElapsed(beforeRetry retry: Int) -> Duration {
        var elapsed = Duration.zero
        var interval = initialInterval
        var step = 1
        while step < retry {
            if interval >= maxInterval { return elapsed + maxInterval * (retry - step) }
            elapsed += interval
            interval = interval * Self.multiplier
            step += 1
        }
        return elapsed
    }

    /// The wait before the `retry`th retry, or nil when the policy allows no more: past `maxRetries`, or, for
    /// exponential back-off, when the waits would add up past `maxElapsedTime`. `random` (in 0...1) picks the
    /// jitter of exponential back-off: the wait is `nominal × (0.5 + random)`.
    package func delay(beforeRetry retry: Int, random: Double) -> Duration? {
        if maxRetries >= 0, retry > maxRetries { return nil }
        let nominal = nominalInterval(beforeRetry: retry)
        guard kind == .exponential else { return nominal }
        // Dapr counts the wall time since the first attempt; the waits' nominal sum stands for it here (a message
        // does not carry when it was first delivered).
        let elapsed = nominalElapsed(beforeRetry: retry)
        if elapsed > Self.maxElapsedTime { return nil }
        let factor = 1 - Self.randomizationFactor + 2 * Self.randomizationFactor * min(max(random, 0), 1)
        let wait = nominal * factor
        return elapsed + wait > Self.maxElapsedTime ? nil : wait
    }
}

/// `matching` of a retry policy: which failures that carry a status code are retried. A list that is not given
/// retries every code of its kind; a failure that carries no code (RETRY, an unreachable HTTP app) is always
/// retried (Dapr's `RetryConditionMatch`).
package struct RetryMatching: Sendable, Hashable {
    /// Inclusive ranges; nil: every code.
    package var httpStatusCodes: [ClosedRange<Int>]?
    package var grpcStatusCodes: [ClosedRange<Int>]?

    package init(httpStatusCodes: [ClosedRange<Int>]? = nil, grpcStatusCodes: [ClosedRange<Int>]? = nil) {
        self.httpStatusCodes = httpStatusCodes
        self.grpcStatusCodes = grpcStatusCodes
    }

    /// The codes each list may name (Dapr's).
    static let httpRange = 100...599
    static let grpcRange = 0...16

    /// Whether a failure with `code` is retried.
    package func retries(_ code: DeliveryFailureCode?) -> Bool {
        switch code {
        case nil: return true
        case .http(let status): return httpStatusCodes.map { $0.contains { $0.contains(status) } } ?? true
        case .grpc(let status): return grpcStatusCodes.map { $0.contains { $0.contains(status) } } ?? true
        }
    }

    /// Parses Dapr's pattern list (`"429,500-599"`: codes and inclusive ranges, comma-separated, empty items
    /// ignored); an empty string is no list. Throws a message naming the bad pattern.
    static func patterns(_ text: String, within valid: ClosedRange<Int>) throws(RetryMatchingError) -> [ClosedRange<
        Int
    >]? {
        guard !text.isEmpty else { return nil }
        var ranges: [ClosedRange<Int>] = []
        for pattern in text.split(separator: ",", omittingEmptySubsequences: true) {
            let bounds = pattern.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2 else { throw RetryMatchingError("invalid pattern \(pattern): more than one '-'") }
            guard let start = Int(bounds[0]), let end = Int(bounds.last!) else {
                throw RetryMatchingError("invalid pattern \(pattern): not a code or a range of codes")
            }
            guard valid.contains(start), valid.contains(end) else {
                throw RetryMatchingError(
                    "invalid pattern \(pattern): codes must be within \(valid.lowerBound)-\(valid.upperBound)")
            }
            guard start <= end else {
                throw RetryMatchingError("invalid pattern \(pattern): the start is after the end")
            }
            ranges.append(start...end)
        }
        return ranges
    }
}

/// Why a `matching` pattern list cannot be read.
struct RetryMatchingError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// The status a failed delivery carries, for a retry policy's `matching`: the HTTP status an HTTP app answered
/// (other than 2xx and 404), or the gRPC status a gRPC app's call failed with.
package enum DeliveryFailureCode: Sendable, Hashable, CustomStringConvertible {
    case http(Int)
    case grpc(Int)

    package var description: String {
        switch self {
        case .http(let status): "HTTP \(status)"
        case .grpc(let code): "gRPC code \(code)"
        }
    }
}

/// A circuit breaker policy of a `Resiliency` resource (`spec.policies.circuitBreakers.<name>`), with
/// gobreaker's defaults as Dapr uses it: it opens when `trip` holds after a failure, stays open for `timeout`,
/// then lets `maxRequests` calls through (half-open) and closes once they all succeed (one failure opens it
/// again). `interval` clears the counts periodically while closed (0: never).
package struct CircuitBreakerPolicy: Sendable, Hashable {
    package var maxRequests: Int = 1
    package var interval: Duration = .zero
    package var timeout: Duration = .seconds(60)
    /// A CEL expression over `requests`, `totalSuccesses`, `totalFailures`, `consecutiveSuccesses` and
    /// `consecutiveFailures` (default `consecutiveFailures > 5`).
    package var trip: RouteMatch

    /// The counts `trip` sees.
    package static let tripVariables: Set<String> = [
        "requests", "totalSuccesses", "totalFailures", "consecutiveSuccesses", "consecutiveFailures",
    ]
    package static let defaultTrip = "consecutiveFailures > 5"

    package init(
        maxRequests: Int = 1, interval: Duration = .zero, timeout: Duration = .seconds(60),
        trip: String = CircuitBreakerPolicy.defaultTrip
    ) throws(RouteMatchError) {
        self.maxRequests = maxRequests
        self.interval = interval
        self.timeout = timeout
        self.trip = try RouteMatch(trip, variables: Self.tripVariables)
    }
}
