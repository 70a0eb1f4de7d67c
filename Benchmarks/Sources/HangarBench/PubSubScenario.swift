import Foundation
import Glibc
import NIOCore
import NIOPosix

/// The `pubsub` scenario (issue 14, "Measure"): publish → delivery latency through hangard, with open-loop paced
/// publishers (`PacedCaller`, each event stamped with the instant its publish call started) and a subscriber that
/// answers SUCCESS at once, streaming (`GRPCSubscriber`) or pushed to (`PushReceiver`), on `pubsub.sqlite` and
/// `pubsub.in-memory`; and the noisy neighbour for pub/sub: the same low-rate publishing in tenant `bench` while
/// tenant `noisy` floods a streaming subscriber of its own that never answers, on the same component.
///
/// Each round runs, per component and delivery, the half-rate phase (half the calls/s pubsub.sqlite sustained with
/// the concurrent closed-loop publishers of the `publish-sqlite` phase of the same round, or `--pubsub-rate`) and
/// the low-rate one; on pubsub.sqlite, streaming, also the flooded one, right after its low-rate phase ("B alone").
/// A streaming phase subscribes to a topic of its own first (a new subscription starts at the end of the log, so
/// nothing from an earlier phase is delivered) and cancels the subscription at the end; a push phase publishes to
/// the topic the app `pusher` is subscribed to (events of an earlier phase that arrive late are told apart by their
/// stamps). Every phase publishes for `warmup + duration` and waits up to `deliveryTimeout` for the window's
/// events. Publishers and streaming subscriber have event loops of their own, the flood a third one and the push
/// receiver a fourth, so that none of them queues behind another on the client side.
struct PubSubScenario: Sendable {
    static let memoryComponent = "mempubsub"
    static let sqliteComponent = "sqlpubsub"
    /// The second tenant, for the flooded phase: its publisher app and its subscriber app.
    static let noisyTenant = BenchTenant(
        namespace: "noisy", apps: [floodApp, sinkApp], quotas: BenchTenant.unlimited)
    static let floodApp = "flood"
    static let sinkApp = "sink"
    /// How long after the window the scenario waits for the window's events to arrive.
    static let deliveryTimeout: UInt64 = 5_000_000_000

    let publishers: [GRPCClientConnection]
    let subscriber: GRPCClientConnection
    let floodPublishers: [GRPCClientConnection]
    let sink: GRPCClientConnection
    let push: PushReceiver
    let groups: [MultiThreadedEventLoopGroup]
    let hangardPID: pid_t
    let dataBytes: Int
    let lowRate: Double
    let floodRate: Double
    let fixedRate: Double?
    let warmup: Double
    let duration: Double
    let patience: PatienceBudget

    /// Connects (publishers to apps 0…`publisherCount`-1 of tenant `bench`, the subscriber to its last app, the
    /// flood's to tenant `noisy`) and checks that an event published on each component reaches a subscriber.
    static func prepare(
        fixture: BenchFixture, publisherGroup: any EventLoopGroup, push: PushReceiver, hangardPID: pid_t,
        publisherCount: Int,
        dataBytes: Int, lowRate: Double, floodRate: Double, fixedRate: Double?, warmup: Double, duration: Double,
        patience: PatienceBudget
    ) async throws -> PubSubScenario {
        let subscriberGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let floodGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var connections: [GRPCClientConnection] = []
        func connect(_ socket: String, _ group: any EventLoopGroup) async throws -> GRPCClientConnection {
            let connection = try await GRPCClientConnection.connect(unixSocket: socket, group: group)
            connections.append(connection)
            return connection
        }
        do {
            var publishers: [GRPCClientConnection] = []
            for app in 0..<publisherCount {
                publishers.append(try await connect(fixture.grpcSocket(app: app), publisherGroup))
            }
            let subscriber = try await connect(fixture.grpcSocket(app: fixture.apps - 1), subscriberGroup)
            var floodPublishers: [GRPCClientConnection] = []
            let floodSocket = fixture.grpcSocket(namespace: noisyTenant.namespace, app: floodApp)
            for _ in 0..<4 { floodPublishers.append(try await connect(floodSocket, floodGroup)) }
            let sink = try await connect(
                fixture.grpcSocket(namespace: noisyTenant.namespace, app: sinkApp), floodGroup)
            let scenario = PubSubScenario(
                publishers: publishers, subscriber: subscriber, floodPublishers: floodPublishers, sink: sink,
                push: push, groups: [subscriberGroup, floodGroup], hangardPID: hangardPID, dataBytes: dataBytes,
                lowRate: lowRate,
                floodRate: floodRate, fixedRate: fixedRate, warmup: warmup, duration: duration, patience: patience)
            for component in [memoryComponent, sqliteComponent] {
                for delivery in [PubSubDelivery.streaming, .push] {
                    try await scenario.checkDelivery(component, delivery)
                }
            }
            return scenario
        } catch {
            await GRPCClientConnection.close(connections)
            for group in [subscriberGroup, floodGroup] { try? await group.shutdownGracefully() }
            throw error
        }
    }

    /// Closes the connections and event loops; the push receiver is the caller's (it started before hangard).
    func close() async {
        await GRPCClientConnection.close(publishers + [subscriber] + floodPublishers + [sink])
        for group in groups { try? await group.shutdownGracefully() }
    }

    /// The phases of one round; `sqliteRate` is what pubsub.sqlite sustained with concurrent closed-loop publishers
    /// in this round (nil when `publish-sqlite` did not run: then `--pubsub-rate` is the full rate).
    func runRound(_ round: Int, sqliteRate: Double?) async throws -> [PubSubPhaseResult] {
        guard let fullRate = sqliteRate ?? fixedRate else {
            throw BenchError("the pubsub scenario needs the publish-sqlite scenario or --pubsub-rate")
        }
        var results: [PubSubPhaseResult] = []
        // Per component, the low-rate phases first: "B alone" and the flooded phase side by side, neither of them
        // right after the heavy half-rate phases (whose aftermath on pubsub.sqlite is a stall of up to ~100 ms).
        for component in [Self.memoryComponent, Self.sqliteComponent] {
            var phases: [(PubSubPhaseResult.Kind, PubSubDelivery)] = [(.lowRate, .streaming)]
            if component == Self.sqliteComponent { phases.append((.lowRateFlooded, .streaming)) }
            phases += [(.lowRate, .push), (.halfRate, .streaming), (.halfRate, .push)]
            for (kind, delivery) in phases {
                let rate = kind == .halfRate ? fullRate / 2 : lowRate
                var result = try await measure(
                    kind, component: component, delivery: delivery, rate: rate, round: round)
                result.round = round
                TextTable.progress(Self.describe(result))
                results.append(result)
            }
        }
        return results
    }

    // MARK: Phases

    /// Publishes one event on `component` to a fresh streaming subscription, or to the push receiver's topic, and
    /// waits (up to 10 s) for it.
    private func checkDelivery(_ component: String, _ delivery: PubSubDelivery) async throws {
        let topic = delivery == .push ? PushReceiver.topic : "check-\(component)"
        let receiver = try await open(delivery, topic: topic, component: component)
        do {
            let (message, offset) = try BenchRequests.publishEvent(
                pubsub: component, topic: topic, dataBytes: dataBytes)
            var stamped = message
            let sent = NIODeadline.now().uptimeNanoseconds
            BenchRequests.stamp(&stamped, at: offset, instant: sent)
            _ = try await publishers[0].unary(path: BenchRequests.publishEventPath, message: stamped).get()
            let deadline = NIODeadline.now().uptimeNanoseconds + 10_000_000_000
            while try await arrivals(receiver, before: .max).isEmpty {
                guard NIODeadline.now().uptimeNanoseconds < deadline else {
                    throw BenchError(
                        "an event published on \(component) did not reach its \(delivery.rawValue) subscriber in 10 s")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
        } catch {
            await close(receiver)
            throw error
        }
        await close(receiver)
    }

    private func measure(
        _ kind: PubSubPhaseResult.Kind, component: String, delivery: PubSubDelivery, rate: Double, round: Int
    ) async throws -> PubSubPhaseResult {
        if !patience.isExhausted {
            let busy = try await patience.waitForQuiet(threshold: 0.1, limit: .seconds(15))
            if busy >= 0.1 {
                TextTable.progress("other processes keep \(TextTable.format(busy, 2)) cores busy; measuring anyway")
            }
        }
        let topic = delivery == .push ? PushReceiver.topic : "r\(round)-\(kind.rawValue)"
        let flooded = kind == .lowRateFlooded
        let receiver = try await open(delivery, topic: topic, component: component)
        var sinkSubscription: NIOLoopBound<GRPCSubscriber>?
        do {
            if flooded {
                sinkSubscription = try await openSubscriber(
                    on: sink, topic: "flood-r\(round)", component: component, answer: .never)
            }
            let (message, stampOffset) = try BenchRequests.publishEvent(
                pubsub: component, topic: topic, dataBytes: dataBytes)
            let nanosecondsPerSecond = 1_000_000_000.0
            // The flood starts a second before the steady publishers, so that its subscriber's in-flight window is
            // full and its backlog growing when the window opens.
            let origin = NIODeadline.now().uptimeNanoseconds + 20_000_000
            let start = origin + (flooded ? 1_000_000_000 : 0)
            let measureFrom = start + UInt64(warmup * nanosecondsPerSecond)
            let end = measureFrom + UInt64(duration * nanosecondsPerSecond)
            let publisherFutures = PacedCaller.start(
                on: publishers,
                requests: Array(
                    repeating: [GRPCClientRequest(path: BenchRequests.publishEventPath, message: message)],
                    count: publishers.count),
                rate: rate, schedule: PacedSchedule(start: start, measureFrom: measureFrom, end: end),
                stampOffset: stampOffset)
            var floodFutures: [EventLoopFuture<PacedOutcome>] = []
            if flooded {
                let flood = try BenchRequests.publishEvent(
                    pubsub: component, topic: "flood-r\(round)", dataBytes: dataBytes)
                floodFutures = PacedCaller.start(
                    on: floodPublishers,
                    requests: Array(
                        repeating: [GRPCClientRequest(path: BenchRequests.publishEventPath, message: flood.message)],
                        count: floodPublishers.count),
                    rate: floodRate, schedule: PacedSchedule(start: origin, measureFrom: measureFrom, end: end))
            }

            try await PacedSchedule.sleep(until: measureFrom)
            let systemBefore = SystemCPUSample.read()
            let before = try ProcessSample.read(pid: hangardPID)
            let benchBefore = ProcessSample.ownCPUMicros()
            let sampledFrom = NIODeadline.now().uptimeNanoseconds
            try await PacedSchedule.sleep(until: end)
            let sampledUntil = NIODeadline.now().uptimeNanoseconds
            let benchAfter = ProcessSample.ownCPUMicros()
            let after = try ProcessSample.read(pid: hangardPID)
            let systemAfter = SystemCPUSample.read()

            var outcomes: [PacedOutcome] = []
            for future in publisherFutures { outcomes.append(try await future.get()) }
            var floodOutcomes: [PacedOutcome] = []
            for future in floodFutures { floodOutcomes.append(try await future.get()) }
            let seconds = Double(end - measureFrom) / nanosecondsPerSecond
            let publish = PacedTraffic(PacedOutcome.merged(outcomes), seconds: seconds)
            let flood = flooded ? PacedTraffic(PacedOutcome.merged(floodOutcomes), seconds: seconds) : nil

            // The window's events: every stamp from measureFrom on (no call is sent after the window; a call due in
            // it but sent after `end` by a busy client still counts), waited for until they are all there. A warm-up
            // call sent late counts too: it shows as an extra arrival, not as a delivery of the window.
            var window: [GRPCSubscriber.Arrival] = []
            let deadline = NIODeadline.now().uptimeNanoseconds + Self.deliveryTimeout
            while true {
                window += try await arrivals(receiver, before: .max).filter {
                    $0.stamp >= measureFrom
                }
                if window.count >= publish.ok || NIODeadline.now().uptimeNanoseconds >= deadline { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            var floodReceived: Int?
            if let sinkSubscription { floodReceived = try await received(sinkSubscription, on: sink) }

            let sampledSeconds = Double(sampledUntil - sampledFrom) / nanosecondsPerSecond
            let hangardMicros = ProcessSample.cpuMicros(from: before, to: after)
            let (otherCores, _) = SystemCPUSample.otherLoad(
                from: systemBefore, to: systemAfter, knownMicros: hangardMicros + (benchAfter - benchBefore),
                seconds: sampledSeconds)
            let messages = max(1, publish.ok + (flood?.ok ?? 0))
            let delivered = min(window.count, publish.ok)
            await close(receiver)
            if let sinkSubscription { await cancel(sinkSubscription, on: sink) }
            return PubSubPhaseResult(
                kind: kind, component: component, delivery: delivery, seconds: seconds, publish: publish,
                delivered: delivered, undelivered: publish.ok - delivered,
                duplicates: max(0, window.count - publish.ok),
                deliveryLatency: LatencySummary(samples: window.map { $0.arrived - $0.stamp }),
                hangardCPUMicrosPerMessage: hangardMicros / Double(messages),
                hangardCores: hangardMicros / 1_000_000 / sampledSeconds, otherBusyCores: otherCores, flood: flood,
                floodReceived: floodReceived)
        } catch {
            await close(receiver)
            if let sinkSubscription { await cancel(sinkSubscription, on: sink) }
            throw error
        }
    }

    // MARK: Subscribers

    /// Where a phase's events arrive.
    private enum Receiver {
        /// A streaming subscription of the bench's own, on the `subscriber` connection.
        case stream(NIOLoopBound<GRPCSubscriber>)
        /// The push receiver (the app `pusher`), always subscribed to its topic.
        case push
    }

    private func open(_ delivery: PubSubDelivery, topic: String, component: String) async throws -> Receiver {
        switch delivery {
        case .streaming:
            .stream(try await openSubscriber(on: subscriber, topic: topic, component: component, answer: .success))
        case .push: .push
        }
    }

    /// The receiver's arrivals stamped before `until` (taken from it); fails if a subscription has failed.
    private func arrivals(_ receiver: Receiver, before until: UInt64) async throws -> [GRPCSubscriber.Arrival] {
        switch receiver {
        case .stream(let subscription): try await arrivals(subscription, on: subscriber, before: until)
        case .push: push.take(before: until)
        }
    }

    private func close(_ receiver: Receiver) async {
        if case .stream(let subscription) = receiver { await cancel(subscription, on: subscriber) }
    }

    /// Opens a streaming subscription on `connection`'s event loop and waits for its initial response.
    private func openSubscriber(
        on connection: GRPCClientConnection, topic: String, component: String, answer: GRPCSubscriber.Answer
    ) async throws -> NIOLoopBound<GRPCSubscriber> {
        let handler = connection.handler
        let eventLoop = connection.eventLoop
        let (subscriber, ready) = try await eventLoop.submit {
            let subscriber = GRPCSubscriber(handler: handler.value, eventLoop: eventLoop, answer: answer)
            return (NIOLoopBound(subscriber, eventLoop: eventLoop), subscriber.start(pubsub: component, topic: topic))
        }.get()
        do {
            try await ready.get()
        } catch {
            await cancel(subscriber, on: connection)
            throw BenchError("subscribing to \(topic) on \(component): \(error)")
        }
        return subscriber
    }

    /// The subscriber's arrivals stamped before `until` (taken from it); fails if the subscription has failed.
    private func arrivals(
        _ subscriber: NIOLoopBound<GRPCSubscriber>, on connection: GRPCClientConnection, before until: UInt64
    ) async throws -> [GRPCSubscriber.Arrival] {
        try await connection.eventLoop.submit {
            if let failure = subscriber.value.failure { throw BenchError("subscription: \(failure)") }
            return subscriber.value.take(before: until)
        }.get()
    }

    /// The events the subscriber has received; fails if the subscription has failed.
    private func received(
        _ subscriber: NIOLoopBound<GRPCSubscriber>, on connection: GRPCClientConnection
    ) async throws -> Int {
        try await connection.eventLoop.submit {
            if let failure = subscriber.value.failure { throw BenchError("subscription (flood): \(failure)") }
            return subscriber.value.received
        }.get()
    }

    private func cancel(_ subscriber: NIOLoopBound<GRPCSubscriber>, on connection: GRPCClientConnection) async {
        try? await connection.eventLoop.submit { subscriber.value.cancel() }.get()
    }

    /// The phase's progress line.
    static func describe(_ result: PubSubPhaseResult) -> String {
        let f = TextTable.format
        let publish = result.publish
        var line =
            "pubsub \(result.label) \(result.delivery.rawValue) r\(result.round): offered "
            + "\(f(publish.offeredPerSecond, 0))/s, published \(publish.ok) (\(publish.errors) errors), publish p50 "
            + "\(f(publish.latency.p50, 1)) p99 "
            + "\(f(publish.latency.p99, 1)) µs; delivered \(result.delivered) (\(result.undelivered) missing), p50 "
            + "\(f(result.deliveryLatency.p50, 1)) p99 \(f(result.deliveryLatency.p99, 1)) µs; hangard "
            + "\(f(result.hangardCPUMicrosPerMessage, 1)) µs CPU/msg, other load "
            + (result.otherBusyCores.map { f($0, 2) } ?? "-")
        if let flood = result.flood {
            line +=
                "; flood \(TextTable.format(flood.okPerSecond, 0))/s OK (\(flood.errors) errors), its subscriber got "
                + "\(result.floodReceived ?? 0)"
        }
        return line
    }
}
