import Foundation
import HangarComponents
import Testing

@testable import HangarRuntime

@Suite("Resiliency resources")
struct ResiliencyResourceTests {
    /// Loads a configuration from these resource files (`ResourceFixture`).
    func load(_ files: [String: String]) throws -> NodeConfiguration { try ResourceFixture.load(files) }

    /// One Resiliency document with this `spec` (indented by the caller) and metadata.
    func resource(_ spec: String, name: String = "res", namespace: String? = nil, scopes: String? = nil) -> String {
        """
        apiVersion: dapr.io/v1alpha1
        kind: Resiliency
        metadata: {name: \(name)\(namespace.map { ", namespace: \($0)" } ?? "")}
        \(scopes.map { "scopes: \($0)\n" } ?? "")spec:
        \(spec)
        """
    }

    let teamAOrders = AppID(namespace: "team-a", appId: "orders")
    let teamABilling = AppID(namespace: "team-a", appId: "billing")
    let teamBOrders = AppID(namespace: "team-b", appId: "orders")

    @Test("the whole schema is read, with Dapr's defaults for what is left out")
    func whole() throws {
        let configuration = try load([
            "res.yaml": resource(
                """
                  policies:
                    timeouts: {general: 5s, quick: "500", long: 1h30m}
                    retries:
                      plain: {}
                      pubsubRetry: {policy: constant, duration: 2s, maxRetries: 2}
                      backoff:
                        policy: Exponential
                        maxInterval: 15s
                        maxRetries: -1
                        matching: {httpStatusCodes: "429,500-599", gRPCStatusCodes: "1-4,,14"}
                    circuitBreakers:
                      cb: {maxRequests: 2, interval: 8s, timeout: 45s, trip: consecutiveFailures >= 3}
                      bare: {}
                  targets:
                    apps: {billing: {timeout: general, retry: plain, circuitBreaker: cb, circuitBreakerCacheSize: 10}}
                    actors: {cart: {retry: plain, circuitBreaker: cb, circuitBreakerScope: both}}
                    components:
                      pubsub: {inbound: {retry: pubsubRetry, timeout: quick}, outbound: {retry: backoff}}
                """)
        ])
        let resource = try #require(configuration.resiliencies.first)
        #expect(resource.error == nil)
        #expect(resource.timeouts == ["general": .seconds(5), "quick": .milliseconds(500), "long": .seconds(5400)])
        #expect(resource.retries["plain"] == RetryPolicy())
        #expect(resource.retries["plain"]?.duration == .seconds(5))
        #expect(resource.retries["plain"]?.maxRetries == -1)
        #expect(resource.retries["pubsubRetry"] == RetryPolicy(kind: .constant, duration: .seconds(2), maxRetries: 2))
        let backoff = try #require(resource.retries["backoff"])
        #expect(backoff.kind == .exponential)
        #expect(backoff.initialInterval == .milliseconds(500))
        #expect(backoff.maxInterval == .seconds(15))
        #expect(backoff.matching.httpStatusCodes == [429...429, 500...599])
        #expect(backoff.matching.grpcStatusCodes == [1...4, 14...14])
        let cb = try #require(resource.circuitBreakers["cb"])
        #expect(cb.maxRequests == 2)
        #expect(cb.interval == .seconds(8))
        #expect(cb.timeout == .seconds(45))
        #expect(cb.trip.expression == "consecutiveFailures >= 3")
        let bare = try #require(resource.circuitBreakers["bare"])
        #expect(bare.maxRequests == 1)
        #expect(bare.interval == .zero)
        #expect(bare.timeout == .seconds(60))
        #expect(bare.trip.expression == "consecutiveFailures > 5")
        #expect(
            resource.apps["billing"] == ResiliencyPolicyNames(timeout: "general", retry: "plain", circuitBreaker: "cb"))
        #expect(resource.actors["cart"] == ResiliencyPolicyNames(retry: "plain", circuitBreaker: "cb"))
        #expect(
            resource.components["pubsub"]
                == ResiliencyComponentTarget(
                    inbound: ResiliencyPolicyNames(timeout: "quick", retry: "pubsubRetry"),
                    outbound: ResiliencyPolicyNames(retry: "backoff")))
        #expect(
            resource.notApplied == [
                "targets.apps.billing", "targets.actors.cart", "targets.components.pubsub.outbound",
            ])
    }

    @Test(
        "an invalid resource is kept with its error, applies to nothing, and does not reject the configuration",
        arguments: [
            (
                "  policies: {retries: {r: {policy: linear}}}", "spec.policies.retries.r.policy",
                "constant or exponential"
            ),
            ("  policies: {retries: {r: {duration: 5 seconds}}}", "spec.policies.retries.r.duration", "not a duration"),
            ("  policies: {retries: {r: {duration: -1s}}}", "spec.policies.retries.r.duration", "negative"),
            ("  policies: {retries: {r: {maxRetries: -2}}}", "spec.policies.retries.r.maxRetries", "-1"),
            ("  policies: {retries: {r: {maxRetries: many}}}", "spec.policies.retries.r.maxRetries", "integer"),
            ("  policies: {retries: {r: {multiplier: 2}}}", "spec.policies.retries.r.multiplier", "unknown field"),
            (
                "  policies: {retries: {r: {matching: {httpStatusCodes: \"600\"}}}}",
                "spec.policies.retries.r.matching.httpStatusCodes", "within 100-599"
            ),
            (
                "  policies: {retries: {r: {matching: {gRPCStatusCodes: \"5-2\"}}}}",
                "spec.policies.retries.r.matching.gRPCStatusCodes", "after the end"
            ),
            (
                "  policies: {retries: {r: {matching: {gRPCStatusCodes: \"1-2-3\"}}}}",
                "spec.policies.retries.r.matching.gRPCStatusCodes", "more than one"
            ),
            ("  policies: {timeouts: {t: soon}}", "spec.policies.timeouts.t", "not a duration"),
            (
                "  policies: {circuitBreakers: {c: {trip: failures > 1}}}", "spec.policies.circuitBreakers.c.trip",
                "unknown identifier"
            ),
            (
                "  policies: {circuitBreakers: {c: {maxRequests: -1}}}", "spec.policies.circuitBreakers.c.maxRequests",
                "negative"
            ),
            (
                "  targets: {components: {pubsub: {inbound: {retry: missing}}}}",
                "spec.targets.components.pubsub.inbound.retry", "does not declare"
            ),
            ("  targets: {apps: {a: {timeout: missing}}}", "spec.targets.apps.a.timeout", "does not declare"),
            (
                "  policies: {circuitBreakers: {c: {}}}\n  targets: {actors: {cart: {circuitBreaker: c}}}",
                "spec.targets.actors.cart.circuitBreakerScope", "is required"
            ),
            (
                "  targets: {components: {pubsub: {sideways: {}}}}", "spec.targets.components.pubsub.sideways",
                "unknown field"
            ),
            ("  policy: {}", "spec.policy", "unknown field"),
        ])
    func invalid(spec: String, field: String, message: String) throws {
        let configuration = try load([
            "bad.yaml": resource(spec, name: "bad"),
            "good.yaml": resource("  policies: {retries: {DefaultRetryPolicy: {duration: 2s}}}", name: "good"),
        ])
        let bad = try #require(configuration.resiliencies.first { $0.name == "bad" })
        let error = try #require(bad.error)
        #expect(error.field == field)
        #expect(error.message.contains(message), "\(error.message)")
        #expect(!bad.applies(to: teamAOrders))
        // The other resource still applies.
        #expect(configuration.inboundPolicy(for: teamAOrders, component: "pubsub").retry?.duration == .seconds(2))
    }

    @Test("the apiVersion is checked and a second resource of the same name and namespace is invalid")
    func identity() throws {
        let configuration = try load([
            "a.yaml": resource("  policies: {}", name: "same"),
            "b.yaml": resource("  policies: {}", name: "same"),
            "c.yaml": resource("  policies: {}", name: "other").replacingOccurrences(of: "v1alpha1", with: "v2"),
        ])
        let same = configuration.resiliencies.filter { $0.name == "same" }
        #expect(same.count == 2)
        #expect(same[0].error == nil)
        #expect(same[1].error?.message.contains("also declared") == true)
        #expect(configuration.resiliencies.first { $0.source.hasSuffix("c.yaml") }?.error?.field == "apiVersion")
    }

    @Test("Dapr's duration syntax: plain numbers are milliseconds, Go's units otherwise")
    func durations() {
        #expect(ResiliencyDuration.parse("250") == .milliseconds(250))
        #expect(ResiliencyDuration.parse("0") == .zero)
        #expect(ResiliencyDuration.parse("1h30m") == .seconds(5400))
        #expect(ResiliencyDuration.parse("1.5s") == .milliseconds(1500))
        #expect(ResiliencyDuration.parse(".5s") == .milliseconds(500))
        #expect(ResiliencyDuration.parse("300us") == .microseconds(300))
        #expect(ResiliencyDuration.parse("300µs") == .microseconds(300))
        #expect(ResiliencyDuration.parse("2m3s") == .seconds(123))
        #expect(ResiliencyDuration.parse("-2s") == .seconds(-2))
        for bad in ["", "s", "5 s", "5x", "1.2.3s", "h1", "5s3"] {
            #expect(ResiliencyDuration.parse(bad) == nil, "\(bad)")
        }
        #expect(ResiliencyDuration.format(.seconds(5400)) == "1h30m0s")
        #expect(ResiliencyDuration.format(.milliseconds(500)) == "500ms")
        #expect(ResiliencyDuration.format(.seconds(5)) == "5s")
    }

    @Test("tenancy: a namespace limits a resource to its tenant, scopes to their apps")
    func tenancy() throws {
        let configuration = try load([
            "a.yaml": resource(
                "  policies: {retries: {DefaultRetryPolicy: {duration: 1s}}}", name: "a", namespace: "team-a"),
            "b.yaml": resource(
                "  policies: {retries: {DefaultRetryPolicy: {duration: 2s}}}", name: "b", scopes: "[billing]"),
        ])
        #expect(configuration.inboundPolicy(for: teamAOrders, component: "pubsub").retry?.duration == .seconds(1))
        // Files by name: b comes after a and wins for billing, the only app it applies to.
        #expect(configuration.inboundPolicy(for: teamABilling, component: "pubsub").retry?.duration == .seconds(2))
        #expect(configuration.inboundPolicy(for: teamBOrders, component: "pubsub") == .none)
    }

    @Test("a named component target wins, and the parts it leaves out take no default (Dapr)")
    func namedTarget() throws {
        let configuration = try load([
            "res.yaml": resource(
                """
                  policies:
                    timeouts: {DefaultTimeoutPolicy: 9s, short: 2s}
                    retries: {DefaultRetryPolicy: {duration: 9s}, pubsubRetry: {duration: 1s, maxRetries: 2}}
                  targets:
                    components: {pubsub: {inbound: {retry: pubsubRetry}}, other: {outbound: {timeout: short}}}
                """)
        ])
        let named = configuration.inboundPolicy(for: teamAOrders, component: "pubsub")
        #expect(named.retry == RetryPolicy(duration: .seconds(1), maxRetries: 2))
        #expect(named.timeout == nil)
        #expect(named.origin == ["retry pubsubRetry (*/res)"])
        // Named only for its outbound side: its inbound side has no policy, and no default either.
        #expect(configuration.inboundPolicy(for: teamAOrders, component: "other") == InboundPolicy())
        let unnamed = configuration.inboundPolicy(for: teamAOrders, component: "events")
        #expect(unnamed.retry?.duration == .seconds(9))
        #expect(unnamed.timeout == .seconds(9))
    }

    @Test("default policies are looked up in Dapr's order, the most specific declared first")
    func defaults() throws {
        let configuration = try load([
            "res.yaml": resource(
                """
                  policies:
                    retries:
                      DefaultRetryPolicy: {duration: 4s}
                      DefaultComponentRetryPolicy: {duration: 3s}
                      DefaultComponentInboundRetryPolicy: {duration: 2s}
                      DefaultStatestoreComponentInboundRetryPolicy: {duration: 7s}
                    timeouts: {DefaultTimeoutPolicy: 4s, DefaultComponentOutboundTimeoutPolicy: 8s}
                    circuitBreakers: {DefaultPubsubComponentInboundCircuitBreakerPolicy: {timeout: 5s}}
                """)
        ])
        let policy = configuration.inboundPolicy(for: teamAOrders, component: "pubsub")
        #expect(policy.retry?.duration == .seconds(2))
        #expect(policy.timeout == .seconds(4))
        #expect(policy.circuitBreaker?.timeout == .seconds(5))
        let resource = try #require(configuration.resiliencies.first)
        #expect(
            resource.notApplied == [
                "policies: DefaultComponentOutboundTimeoutPolicy",
                "policies: DefaultPubsubComponentInboundCircuitBreakerPolicy",
                "policies: DefaultStatestoreComponentInboundRetryPolicy",
            ])
    }

    @Test("several resources merge as in Dapr: a later policy or target of the same name replaces an earlier one")
    func merge() throws {
        let configuration = try load([
            "1.yaml": resource(
                """
                  policies: {retries: {r: {duration: 1s}}, timeouts: {t: 1s}}
                  targets: {components: {pubsub: {inbound: {retry: r, timeout: t}}}}
                """, name: "first"),
            "2.yaml": resource("  policies: {retries: {r: {duration: 2s}}}", name: "second"),
            "3.yaml": resource(
                """
                  policies: {retries: {s: {duration: 3s}}}
                  targets: {components: {events: {inbound: {retry: s}}}}
                """, name: "third"),
        ])
        let pubsub = configuration.inboundPolicy(for: teamAOrders, component: "pubsub")
        #expect(pubsub.retry?.duration == .seconds(2))
        #expect(pubsub.timeout == .seconds(1))
        #expect(pubsub.origin == ["retry r (*/second)", "timeout t (*/first)"])
        #expect(configuration.inboundPolicy(for: teamAOrders, component: "events").retry?.duration == .seconds(3))
    }
}

@Suite("Delivery policy decisions")
struct DeliveryPolicyTests {
    @Test("without a Resiliency policy: the issue's rule, 1 s apart, 10 attempts, then give up")
    func builtIn() {
        let policy = DeliveryPolicy(.none, builtInRetryDelay: .seconds(1))
        #expect(policy == .builtIn(retryDelay: .seconds(1)))
        for attempt in 1..<DeliveryLoop.maxAttempts {
            #expect(policy.afterFailure(attempt: attempt, code: nil) == .retry(after: .seconds(1)))
        }
        guard case .giveUp = policy.afterFailure(attempt: DeliveryLoop.maxAttempts, code: nil) else {
            Issue.record("the 10th failure should give up")
            return
        }
        // The built-in rule retries whatever code a failure carries.
        #expect(policy.afterFailure(attempt: 1, code: .http(400)) == .retry(after: .seconds(1)))
        #expect(policy.allowsDelivery(attempt: 10))
        #expect(!policy.allowsDelivery(attempt: 11))
        #expect(policy.timeout == nil)
    }

    @Test("constant: maxRetries 2 allows 3 attempts, each retry after `duration`")
    func constant() {
        let policy = DeliveryPolicy(
            InboundPolicy(retry: RetryPolicy(duration: .milliseconds(200), maxRetries: 2)),
            builtInRetryDelay: .seconds(1))
        #expect(policy.afterFailure(attempt: 1, code: nil) == .retry(after: .milliseconds(200)))
        #expect(policy.afterFailure(attempt: 2, code: nil) == .retry(after: .milliseconds(200)))
        #expect(policy.afterFailure(attempt: 3, code: nil) != .retry(after: .milliseconds(200)))
        #expect(policy.allowsDelivery(attempt: 3))
        #expect(!policy.allowsDelivery(attempt: 4))
    }

    @Test("maxRetries 0 never retries; -1 never stops retrying a constant policy")
    func limits() {
        let none = DeliveryPolicy(InboundPolicy(retry: RetryPolicy(maxRetries: 0)), builtInRetryDelay: .seconds(1))
        guard case .giveUp = none.afterFailure(attempt: 1, code: nil) else {
            Issue.record("maxRetries 0 retried")
            return
        }
        #expect(!none.allowsDelivery(attempt: 2))
        let forever = DeliveryPolicy(InboundPolicy(retry: RetryPolicy(maxRetries: -1)), builtInRetryDelay: .seconds(1))
        #expect(forever.afterFailure(attempt: 1_000_000, code: nil) == .retry(after: .seconds(5)))
        #expect(forever.allowsDelivery(attempt: 1_000_000))
    }

    @Test("exponential: 500 ms growing by 1.5 up to maxInterval, with ±50 % jitter")
    func exponential() {
        let retry = RetryPolicy(kind: .exponential, maxInterval: .seconds(2), maxRetries: 20)
        #expect(retry.nominalInterval(beforeRetry: 1) == .milliseconds(500))
        #expect(retry.nominalInterval(beforeRetry: 2) == .milliseconds(750))
        #expect(retry.nominalInterval(beforeRetry: 3) == .milliseconds(1125))
        #expect(retry.nominalInterval(beforeRetry: 4) == .milliseconds(1687.5))
        #expect(retry.nominalInterval(beforeRetry: 5) == .seconds(2))
        #expect(retry.nominalInterval(beforeRetry: 50) == .seconds(2))
        #expect(retry.delay(beforeRetry: 1, random: 0) == .milliseconds(250))
        #expect(retry.delay(beforeRetry: 1, random: 0.5) == .milliseconds(500))
        #expect(retry.delay(beforeRetry: 1, random: 1) == .milliseconds(750))
        #expect(retry.delay(beforeRetry: 21, random: 0.5) == nil, "past maxRetries")
        let custom = RetryPolicy(kind: .exponential, initialInterval: .milliseconds(100), maxInterval: .seconds(1))
        #expect(custom.delay(beforeRetry: 2, random: 0.5) == .milliseconds(150))
    }

    @Test("exponential back-off stops once its waits add up past 15 minutes, even without a retry limit")
    func maxElapsedTime() {
        let retry = RetryPolicy(kind: .exponential, maxInterval: .seconds(60), maxRetries: -1)
        // 500 ms × 1.5^n reaches 60 s at the 13th retry; the nominal waits before it add up to about 2.6 minutes,
        // then 60 s each: about 12 more fit in 15 minutes.
        let last = (1...100).last { retry.delay(beforeRetry: $0, random: 0.5) != nil } ?? 0
        #expect(last > 20 && last < 30, "\(last)")
        #expect(retry.nominalElapsed(beforeRetry: 1_000_000_000) > RetryPolicy.maxElapsedTime)
        #expect(retry.delay(beforeRetry: 1_000_000_000, random: 0.5) == nil)
    }

    @Test("matching: listed codes are retried, others given up at once; a failure without a code is retried")
    func matching() throws {
        let retry = RetryPolicy(
            duration: .seconds(1), maxRetries: 5,
            matching: RetryMatching(httpStatusCodes: [429...429, 500...599], grpcStatusCodes: [14...14]))
        let policy = DeliveryPolicy(
            InboundPolicy(retry: retry, origin: ["retry r (*/res)"]), builtInRetryDelay: .seconds(1))
        #expect(policy.afterFailure(attempt: 1, code: .http(503)) == .retry(after: .seconds(1)))
        #expect(policy.afterFailure(attempt: 1, code: .http(429)) == .retry(after: .seconds(1)))
        #expect(policy.afterFailure(attempt: 1, code: .grpc(14)) == .retry(after: .seconds(1)))
        #expect(policy.afterFailure(attempt: 1, code: nil) == .retry(after: .seconds(1)))
        guard case .giveUp(let why) = policy.afterFailure(attempt: 1, code: .http(400)) else {
            Issue.record("HTTP 400 was retried")
            return
        }
        #expect(why.contains("HTTP 400"))
        guard case .giveUp = policy.afterFailure(attempt: 1, code: .grpc(2)) else {
            Issue.record("gRPC UNKNOWN was retried")
            return
        }
        // Only the HTTP list given: every gRPC code is retried.
        let httpOnly = RetryMatching(httpStatusCodes: [500...599])
        #expect(httpOnly.retries(.grpc(2)))
        #expect(!httpOnly.retries(.http(400)))
    }

    @Test("a zero timeout is none; a policy's parts replace the built-in ones they give; no circuit breaker yet")
    func parts() throws {
        let breaker = try CircuitBreakerPolicy()
        let policy = DeliveryPolicy(
            InboundPolicy(
                timeout: .seconds(3), circuitBreaker: breaker,
                origin: ["timeout t (*/res)", "circuitBreaker c (*/res)"]),
            builtInRetryDelay: .milliseconds(20))
        #expect(policy.timeout == .seconds(3))
        #expect(policy.retry == DeliveryPolicy.builtIn(retryDelay: .milliseconds(20)).retry)
        // Not applied yet: not named as followed.
        #expect(policy.origin == "timeout t (*/res)")
        #expect(DeliveryPolicy(InboundPolicy(timeout: .zero), builtInRetryDelay: .seconds(1)).timeout == nil)
    }

    @Test("a circuit breaker's trip sees its counts, and nothing else")
    func trip() throws {
        let breaker = try CircuitBreakerPolicy(trip: "consecutiveFailures > 2 && requests >= 3")
        #expect(try breaker.trip.evaluate(["consecutiveFailures": .number("3"), "requests": .number("3")]))
        #expect(try !breaker.trip.evaluate(["consecutiveFailures": .number("2"), "requests": .number("3")]))
        #expect(throws: RouteMatchError.self) { try CircuitBreakerPolicy(trip: "event.type == 'x'") }
    }
}
