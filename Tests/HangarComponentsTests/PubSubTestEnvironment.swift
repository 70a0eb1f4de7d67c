import Foundation
import HangarComponents
import HangarSQLite
import NIOCore
import NIOPosix
import Testing

/// The pub/sub components the conformance suite runs against.
enum PubSubKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inMemory = "in-memory"
    case sqlite = "sqlite"

    var testDescription: String { rawValue }
}

/// Opening, using and closing pub/sub components in tests (on `StateTestEnvironment`'s event loops and pool).
enum PubSubTestEnvironment {
    typealias Env = StateTestEnvironment

    /// Test limits: no periodic cleanup (tests call `trim`), no retention or size limits unless given.
    static func limits(
        ackTimeout: Duration = .seconds(60), retentionPeriod: Duration? = nil, maxTopicBytes: Int? = nil,
        maxRetainedBytes: Int? = nil, fullTrimInterval: Duration = .seconds(1)
    ) -> PubSubLimits {
        PubSubLimits(
            ackTimeout: ackTimeout, retentionPeriod: retentionPeriod, maxTopicBytes: maxTopicBytes,
            maxRetainedBytes: maxRetainedBytes, cleanupInterval: nil, fullTrimInterval: fullTrimInterval)
    }

    static func open(_ kind: PubSubKind, path: String, limits: PubSubLimits) throws -> any PubSub {
        switch kind {
        case .inMemory: InMemoryPubSub(limits: limits)
        case .sqlite: try openSQLite(path: path, limits: limits)
        }
    }

    /// A pool of its own, so that pub/sub tests (1 MiB messages, many publishers) never delay the state tests'
    /// short TTLs running in parallel.
    static let threadPool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        return pool
    }()

    /// Event loops of their own, for the same reason.
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)

    static func openSQLite(path: String, limits: PubSubLimits = limits()) throws -> SQLitePubSub {
        try SQLitePubSub(
            configuration: .init(path: path, limits: limits), threadPool: threadPool, eventLoopGroup: group,
            logger: Env.logger)
    }

    /// Runs `body` with a new component of `kind`, then closes it and removes its files.
    static func withPubSub(
        _ kind: PubSubKind, limits: PubSubLimits = limits(), _ body: (any PubSub, any EventLoop) async throws -> Void
    ) async throws {
        let eventLoop = group.next()
        let directory = try Env.makeDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let pubsub = try open(kind, path: directory.appendingPathComponent("pubsub.db").path, limits: limits)
        do {
            try await body(pubsub, eventLoop)
        } catch {
            try? await pubsub.close(on: eventLoop).get()
            throw error
        }
        try await pubsub.close(on: eventLoop).get()
    }

    static func message(_ text: String, ttl: Duration? = nil) -> PubSubMessage {
        PubSubMessage(data: Data(text.utf8), contentType: "text/plain", ttl: ttl)
    }

    static func text(_ delivery: PubSubDelivery) -> String {
        String(decoding: delivery.message.data, as: UTF8.self)
    }
}

extension PubSub {
    /// Publishes texts one call each, in order; returns their sequences.
    func publish(_ texts: [String], to topic: String, on eventLoop: any EventLoop) async throws -> [UInt64] {
        var sequences: [UInt64] = []
        for text in texts {
            sequences.append(try await publish(PubSubTestEnvironment.message(text), to: topic, on: eventLoop).get())
        }
        return sequences
    }

    func fetch(
        _ consumer: PubSubConsumer, limit: Int = 100, lease: Duration? = nil, on eventLoop: any EventLoop
    ) async throws -> [PubSubDelivery] {
        try await fetch(consumer, limit: limit, lease: lease, on: eventLoop).get().deliveries
    }

    /// How many trims refused publishes ran (`PubSubTrimGate`), for the components that say.
    var roomTrims: Int? {
        switch self {
        case let pubsub as InMemoryPubSub: pubsub.trimsForRoom
        case let pubsub as SQLitePubSub: pubsub.trimsForRoom
        default: nil
        }
    }

    /// How many observations are registered, for the components that say.
    var registeredObservers: Int? {
        switch self {
        case let pubsub as InMemoryPubSub: pubsub.observerCount
        case let pubsub as SQLitePubSub: pubsub.observerCount
        default: nil
        }
    }
}
