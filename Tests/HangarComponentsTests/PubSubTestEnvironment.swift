import Foundation
import HangarComponents
import HangarRedis
import HangarSQLite
import HangarTestSupport
import NIOCore
import NIOPosix
import Synchronization
import Testing

/// The pub/sub components the conformance suite runs against.
enum PubSubKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inMemory = "in-memory"
    case sqlite = "sqlite"
    /// `pubsub.redis` on a real `redis-server` (`PubSubTestEnvironment.redis`), emptied before each test.
    case redis = "redis"

    var testDescription: String { rawValue }

    /// The components that count bytes and enforce the byte limits (`maxRetainedBytes`, partition limits): all.
    static let accountingKinds: [PubSubKind] = [.inMemory, .sqlite, .redis]

    /// The components that enforce Hangar's retention settings (`retentionPeriod`, `maxTopicBytes`). Not Redis: its
    /// retention is Dapr's (`maxLenApprox`, `streamTTL`), and its group reader reads ahead, so that an entry
    /// retention removes may already be on its way to a consumer.
    static let retentionKinds: [PubSubKind] = [.inMemory, .sqlite]

    /// Whether `trim` removes everything of a topic that has no consumer. Not Redis: a Dapr app may create its
    /// group later, from the start of the stream.
    var trimsTopicsWithoutConsumers: Bool { self != .redis }

    /// Whether sequences are 1, 2, 3, ... per topic. Redis's are stream ids packed into 64 bits
    /// (`RedisStreamID`): increasing in publish order, never reused, not consecutive.
    var denseSequences: Bool { self != .redis }
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
        case .redis: try openRedis(limits: limits)
        }
    }

    /// One `redis-server` for the pub/sub tests of this process (the suites run serialized), stopped when the
    /// process exits.
    static let redis: Result<RedisServer, any Error> = Result {
        let server = try RedisServer()
        atexit { PubSubTestEnvironment.stopRedis() }
        return server
    }

    static func stopRedis() {
        if case .success(let server) = redis { server.stop() }
    }

    /// The next database `openRedis` takes. The pub/sub suites run in parallel on one server, and the byte
    /// counters (`maxRetainedBytes`'s total) are the database's: each component gets a database of its own among
    /// the server's 16, so that a suite's tests never see (or empty) another's data.
    static let nextDatabase = Atomic<Int>(0)

    /// A `pubsub.redis` on `redis`, in a database of its own emptied first (`FLUSHDB`); the lease is the limits'
    /// `ackTimeout` (`processingTimeout`), and `maxRetainedBytes`, `cleanupInterval` and `fullTrimInterval` are the
    /// limits'.
    static func openRedis(
        limits: PubSubLimits = limits(), settings: RedisPubSub.Settings = .init()
    ) throws -> RedisPubSub {
        let server = try redis.get()
        let database = nextDatabase.wrappingAdd(1, ordering: .relaxed).oldValue % 16
        // A 10 s connect timeout, not 1 s: the whole suite runs at once on two cores in CI.
        let configuration = RedisConfiguration(
            address: .tcp(host: "127.0.0.1", port: server.port), database: database, connectTimeout: .seconds(10))
        let connection = try RedisConnection.connect(configuration, on: group.next()).wait()
        _ = try connection.send(["FLUSHDB"], deadline: .now() + .seconds(5)).wait()
        try connection.close().wait()
        var settings = settings
        settings.processingTimeout = limits.ackTimeout
        settings.maxRetainedBytes = limits.maxRetainedBytes
        settings.cleanupInterval = limits.cleanupInterval
        settings.fullTrimInterval = limits.fullTrimInterval
        // The suite checks behaviour, not speed: on two loaded cores (CI runs every test at once) a 1 MiB publish can
        // outlast the 1 s default deadline. HangarRedisTests test the deadline itself.
        settings.commandTimeout = .seconds(30)
        return RedisPubSub(configuration: configuration, settings: settings, eventLoopGroup: group)
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
        case let pubsub as RedisPubSub: pubsub.trimsForRoom
        default: nil
        }
    }

    /// How many observations are registered, for the components that say.
    var registeredObservers: Int? {
        switch self {
        case let pubsub as InMemoryPubSub: pubsub.observerCount
        case let pubsub as SQLitePubSub: pubsub.observerCount
        case let pubsub as RedisPubSub: pubsub.observerCount
        default: nil
        }
    }
}

/// Sequences as the conformance suite expects them: exactly `dense` on components that number 1, 2, 3, ...; on
/// the others, as many, strictly increasing.
func expectSequences(
    _ kind: PubSubKind, _ sequences: [UInt64], dense: [UInt64], sourceLocation: SourceLocation = #_sourceLocation
) {
    if kind.denseSequences {
        #expect(sequences == dense, sourceLocation: sourceLocation)
    } else {
        #expect(sequences.count == dense.count, sourceLocation: sourceLocation)
        #expect(zip(sequences, sequences.dropFirst()).allSatisfy { $0 < $1 }, sourceLocation: sourceLocation)
    }
}
