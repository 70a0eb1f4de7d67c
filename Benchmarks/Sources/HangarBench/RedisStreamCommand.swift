import ArgumentParser
import Foundation
import Glibc
import NIOCore
import NIOPosix

/// `hangar-bench redis-stream`: the practical anchor for the `pubsub` scenario's publish → delivery figures, Redis
/// Streams used directly from the same client: a paced publisher (`XADD`) on one connection and a consumer group
/// reader (`XREADGROUP` + `XACK`) on another, each on an event loop of its own, at each `--rate`, with the
/// publish → arrival latency measured as the `pubsub` scenario measures it (a stamp in the event's data) and the
/// Redis server's CPU per event from `/proc`. scripts/bench-pubsub.sh starts the server and runs this after
/// `hangar-bench run`, at the rates the pubsub scenario used.
struct RedisStreamCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis-stream",
        abstract: "Measure publish → delivery latency on Redis Streams (XADD, XREADGROUP + XACK) directly.")

    /// One measured rate.
    struct Phase: Codable, Sendable {
        var rate: Double
        var seconds: Double
        var publish: PacedTraffic
        var delivered: Int
        var undelivered: Int
        var deliveryLatency: LatencySummary
        /// The Redis server's CPU over the window ÷ events published in it, µs (when --redis-pid is given).
        var serverCPUMicrosPerMessage: Double?
        var otherBusyCores: Double?
    }

    struct Report: Codable, Sendable {
        var date: String
        var command: String
        var machine: BenchReport.Machine
        var dataBytes: Int
        var phases: [Phase]
    }

    @Option(help: "The Redis server's Unix socket.")
    var socket: String

    @Option(help: "The Redis server's pid, for its CPU per event.")
    var redisPID: Int32?

    @Option(help: "Events/s to publish (repeatable: one phase per rate).")
    var rate: [Double] = [200]

    @Option(help: "Seconds measured per rate.")
    var duration: Double = 5

    @Option(help: "Seconds of unmeasured publishing before each window.")
    var warmup: Double = 1

    @Option(help: "Bytes of each event's data (at least 21: the stamp and a space).")
    var dataBytes = 100

    @Option(help: "Write the results as JSON to this path.")
    var json: String?

    func validate() throws {
        guard rate.allSatisfy({ $0 > 0 }), duration > 0, warmup >= 0 else {
            throw ValidationError("--rate and --duration must be positive, --warmup not negative")
        }
        guard dataBytes > BenchRequests.stampDigits else { throw ValidationError("--data-bytes must be at least 21") }
    }

    func run() async throws {
        let publisherGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let consumerGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var channels: [any Channel] = []
        var report = Report(
            date: ISO8601DateFormatter().string(from: Date()), command: CommandLine.arguments.joined(separator: " "),
            machine: BenchReport.currentMachine(), dataBytes: dataBytes, phases: [])
        do {
            let publisher = try await RedisClientHandler.connect(unixSocket: socket, group: publisherGroup)
            channels.append(publisher.channel)
            let consumer = try await RedisClientHandler.connect(unixSocket: socket, group: consumerGroup)
            channels.append(consumer.channel)
            for (index, rate) in rate.enumerated() {
                let phase = try await measure(
                    rate: rate, stream: "pubsub-\(getpid())-\(index)", publisher: publisher, consumer: consumer)
                TextTable.progress(Self.describe(phase))
                report.phases.append(phase)
            }
        } catch {
            for channel in channels { try? await channel.close() }
            try? await publisherGroup.shutdownGracefully()
            try? await consumerGroup.shutdownGracefully()
            throw error
        }
        for channel in channels { try? await channel.close() }
        try await publisherGroup.shutdownGracefully()
        try await consumerGroup.shutdownGracefully()
        print(report.phases.map(Self.describe).joined(separator: "\n"))
        if let json {
            try TextTable.writeJSON(report, to: json)
            print("results written to \(json)")
        }
    }

    private func measure(
        rate: Double, stream: String, publisher: (channel: any Channel, handler: NIOLoopBound<RedisClientHandler>),
        consumer: (channel: any Channel, handler: NIOLoopBound<RedisClientHandler>)
    ) async throws -> Phase {
        let group = "bench"
        // The group starts at the end of the (new) stream, as a new Dapr subscription does.
        _ = try await call(consumer, ["XGROUP", "CREATE", stream, group, "$", "MKSTREAM"])
        let consumerLoop = consumer.channel.eventLoop
        let consumerHandler = consumer.handler
        let (reader, reading) = try await consumerLoop.submit {
            let reader = RedisStreamConsumer(
                handler: consumerHandler.value, eventLoop: consumerLoop, stream: stream, group: group)
            return (NIOLoopBound(reader, eventLoop: consumerLoop), reader.start())
        }.get()

        let nanosecondsPerSecond = 1_000_000_000.0
        let start = NIODeadline.now().uptimeNanoseconds + 20_000_000
        let measureFrom = start + UInt64(warmup * nanosecondsPerSecond)
        let end = measureFrom + UInt64(duration * nanosecondsPerSecond)
        let schedule = PacedSchedule(start: start, measureFrom: measureFrom, end: end)
        let publisherLoop = publisher.channel.eventLoop
        let publisherHandler = publisher.handler
        let dataBytes = dataBytes
        let publishing = try await publisherLoop.submit {
            RedisPacedPublisher(
                handler: publisherHandler.value, eventLoop: publisherLoop, stream: stream, dataBytes: dataBytes,
                rate: rate, schedule: schedule
            ).start()
        }.get()

        try await PacedSchedule.sleep(until: measureFrom)
        let systemBefore = SystemCPUSample.read()
        let before = try redisPID.map { try ProcessSample.read(pid: $0) }
        let benchBefore = ProcessSample.ownCPUMicros()
        let sampledFrom = NIODeadline.now().uptimeNanoseconds
        try await PacedSchedule.sleep(until: end)
        let sampledUntil = NIODeadline.now().uptimeNanoseconds
        let benchAfter = ProcessSample.ownCPUMicros()
        let after = try redisPID.map { try ProcessSample.read(pid: $0) }
        let systemAfter = SystemCPUSample.read()
        let seconds = Double(end - measureFrom) / nanosecondsPerSecond
        let publish = PacedTraffic(try await publishing.get(), seconds: seconds)

        var window: [GRPCSubscriber.Arrival] = []
        let deadline = NIODeadline.now().uptimeNanoseconds + PubSubScenario.deliveryTimeout
        while true {
            window += try await consumerLoop.submit {
                if let failure = reader.value.failure { throw BenchError("redis consumer: \(failure)") }
                return reader.value.take(before: .max).filter { $0.stamp >= measureFrom }
            }.get()
            if window.count >= publish.ok || NIODeadline.now().uptimeNanoseconds >= deadline { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        try await consumerLoop.submit { reader.value.stop() }.get()
        try await reading.get()
        _ = try? await call(consumer, ["DEL", stream])

        let sampledSeconds = Double(sampledUntil - sampledFrom) / nanosecondsPerSecond
        let serverMicros = before.flatMap { before in after.map { ProcessSample.cpuMicros(from: before, to: $0) } }
        let (otherCores, _) = SystemCPUSample.otherLoad(
            from: systemBefore, to: systemAfter, knownMicros: (serverMicros ?? 0) + (benchAfter - benchBefore),
            seconds: sampledSeconds)
        let delivered = min(window.count, publish.ok)
        return Phase(
            rate: rate, seconds: seconds, publish: publish, delivered: delivered, undelivered: publish.ok - delivered,
            deliveryLatency: LatencySummary(samples: window.map { $0.arrived - $0.stamp }),
            serverCPUMicrosPerMessage: serverMicros.map { $0 / Double(max(1, publish.ok)) },
            otherBusyCores: otherCores)
    }

    /// One command on `connection`, waiting for its reply.
    private func call(
        _ connection: (channel: any Channel, handler: NIOLoopBound<RedisClientHandler>), _ arguments: [String]
    ) async throws -> RESPValue {
        let handler = connection.handler
        let eventLoop = connection.channel.eventLoop
        return try await eventLoop.flatSubmit {
            let promise = eventLoop.makePromise(of: RESPValue.self)
            handler.value.send(RESPValue.command(arguments)) { promise.completeWith($0) }
            return promise.futureResult
        }.get()
    }

    static func describe(_ phase: Phase) -> String {
        let f = TextTable.format
        return
            "redis streams at \(f(phase.rate, 0))/s: published \(phase.publish.ok) (\(phase.publish.errors) errors), "
            + "XADD p50 \(f(phase.publish.latency.p50, 1)) p99 \(f(phase.publish.latency.p99, 1)) µs; delivered "
            + "\(phase.delivered) (\(phase.undelivered) missing), p50 \(f(phase.deliveryLatency.p50, 1)) p99 "
            + "\(f(phase.deliveryLatency.p99, 1)) µs; redis "
            + (phase.serverCPUMicrosPerMessage.map { f($0, 1) } ?? "-") + " µs CPU/msg, other load "
            + (phase.otherBusyCores.map { f($0, 2) } ?? "-")
    }
}
