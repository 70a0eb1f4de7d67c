import Foundation
import NIOCore

/// The Redis Streams anchor's publisher: `XADD <stream> * data <event>` at a paced rate on one connection, open
/// loop (calls are due at `start + k / rate`, issued without waiting for earlier replies, on a timer firing at most
/// once a millisecond, as `PacedCaller` does for gRPC), each event's data stamped with the instant it was sent
/// (`BenchRequests.stamp`). Records the calls of the measured window in a `PacedOutcome`. Runs on the connection's
/// event loop.
final class RedisPacedPublisher {
    private let handler: RedisClientHandler
    private let eventLoop: any EventLoop
    private let interval: Double
    private let schedule: PacedSchedule
    private let template: ByteBuffer
    private let stampOffset: Int
    private let done: EventLoopPromise<PacedOutcome>
    private var issuedTotal = 0
    private var pendingInWindow = 0
    private var stopped = false
    private var finished = false
    private var outcome = PacedOutcome()

    init(
        handler: RedisClientHandler, eventLoop: any EventLoop, stream: String, dataBytes: Int, rate: Double,
        schedule: PacedSchedule
    ) {
        self.handler = handler
        self.eventLoop = eventLoop
        self.interval = 1_000_000_000 / rate
        self.schedule = schedule
        let data = String(decoding: BenchRequests.eventData(bytes: dataBytes), as: UTF8.self)
        template = RESPValue.command(["XADD", stream, "*", "data", data])
        // The data is the command's last argument: the stamp starts where its bytes do.
        stampOffset = template.readableBytes - 2 - data.utf8.count
        done = eventLoop.makePromise(of: PacedOutcome.self)
    }

    /// Starts the timer; the future completes once the window's calls are all answered (or timed out).
    func start() -> EventLoopFuture<PacedOutcome> {
        arm(at: max(schedule.start, NIODeadline.now().uptimeNanoseconds))
        return done.futureResult
    }

    private func due(_ index: Int) -> UInt64 { schedule.start + UInt64(Double(index) * interval) }

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
            stopped = true
            if pendingInWindow == 0 { return finish() }
            _ = eventLoop.assumeIsolated().scheduleTask(
                deadline: NIODeadline.uptimeNanoseconds(schedule.end + schedule.answerTimeout)
            ) { self.finish() }
        } else {
            arm(at: max(instant + PacedCaller.tick, next))
        }
    }

    private func issue(scheduledAt scheduled: UInt64, now: UInt64) {
        issuedTotal += 1
        let counted = scheduled >= schedule.measureFrom
        if counted {
            outcome.issued += 1
            outcome.issueLags.append(now - scheduled)
            pendingInWindow += 1
        }
        var command = template
        let sent = NIODeadline.now().uptimeNanoseconds
        BenchRequests.stamp(&command, at: stampOffset, instant: sent)
        handler.send(command) { result in
            guard counted, !self.finished else { return }
            self.pendingInWindow -= 1
            switch result {
            case .success: self.outcome.latencies.append(NIODeadline.now().uptimeNanoseconds - sent)
            case .failure(let error):
                self.outcome.failed += 1
                if self.outcome.firstError == nil { self.outcome.firstError = "\(error)" }
            }
            if self.stopped && self.pendingInWindow == 0 { self.finish() }
        }
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        outcome.unanswered = pendingInWindow
        done.succeed(outcome)
    }
}

/// The Redis Streams anchor's subscriber: a consumer of group `group` reading `stream` with `XREADGROUP ... BLOCK`
/// in a loop, acknowledging each batch with `XACK` (pipelined before the next read), as a Redis Streams consumer
/// that processes events at once does. Records each event's stamp and arrival, like `GRPCSubscriber`. Runs on the
/// connection's event loop.
final class RedisStreamConsumer {
    private let handler: RedisClientHandler
    private let stream: String
    private let group: String
    private let read: ByteBuffer
    private var arrivals: [GRPCSubscriber.Arrival] = []
    private var stopping = false
    private let done: EventLoopPromise<Void>
    /// The reason the consumer failed, if it did.
    private(set) var failure: String?

    init(handler: RedisClientHandler, eventLoop: any EventLoop, stream: String, group: String) {
        self.handler = handler
        self.stream = stream
        self.group = group
        read = RESPValue.command([
            "XREADGROUP", "GROUP", group, "bench", "COUNT", "256", "BLOCK", "100", "STREAMS", stream, ">",
        ])
        done = eventLoop.makePromise(of: Void.self)
        arrivals.reserveCapacity(1 << 16)
    }

    /// Starts reading; the future completes after `stop()`, once the read in progress has returned.
    func start() -> EventLoopFuture<Void> {
        next()
        return done.futureResult
    }

    func stop() { stopping = true }

    /// The arrivals so far whose stamp is before `until`, removed from the record.
    func take(before until: UInt64) -> [GRPCSubscriber.Arrival] {
        let taken = arrivals.filter { $0.stamp < until }
        arrivals.removeAll { $0.stamp < until }
        return taken
    }

    private func next() {
        guard !stopping else { return done.succeed() }
        handler.send(read) { result in
            switch result {
            case .success(let reply): self.received(reply)
            case .failure(let error):
                self.failure = "\(error)"
                self.done.succeed()
            }
        }
    }

    /// `[[stream, [[id, [field, value, …]], …]]]`, or null when the read timed out.
    private func received(_ reply: RESPValue) {
        let now = NIODeadline.now().uptimeNanoseconds
        var ids: [String] = []
        if case .array(let streams?) = reply {
            for case .array(let pair?) in streams where pair.count == 2 {
                guard case .array(let entries?) = pair[1] else { continue }
                for case .array(let entry?) in entries where entry.count == 2 {
                    guard case .bulk(let id?) = entry[0], case .array(let fields?) = entry[1], fields.count >= 2,
                        case .bulk(let value?) = fields[1]
                    else { continue }
                    ids.append(String(buffer: id))
                    if let stamp = BenchRequests.stamp(of: Data(value.readableBytesView)) {
                        arrivals.append(GRPCSubscriber.Arrival(stamp: stamp, arrived: now))
                    }
                }
            }
        }
        if !ids.isEmpty {
            handler.send(RESPValue.command(["XACK", stream, group] + ids)) { result in
                if case .failure(let error) = result, self.failure == nil { self.failure = "XACK: \(error)" }
            }
        }
        next()
    }
}
