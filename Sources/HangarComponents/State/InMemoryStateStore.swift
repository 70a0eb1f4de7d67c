import Foundation
public import NIOCore
import Synchronization

/// `state.in-memory`: a dictionary behind a mutex. Every operation is non-blocking and completes at once on the
/// caller's event loop. Supports ETags, transactions and TTLs; data is lost when the daemon stops.
public final class InMemoryStateStore: TransactionalStateStore {
    private struct Storage {
        var items: [String: StateEntry] = [:]
        var version: UInt64 = 0
        var writesSinceSweep = 0
        var closed = false

        mutating func nextETag() -> String {
            version += 1
            return StateETag.string(version)
        }

        /// The live entry for a key, dropping it when it has expired.
        mutating func live(_ key: String, now: Date) -> StateEntry? {
            guard let entry = items[key] else { return nil }
            if let expiresAt = entry.expiresAt, expiresAt <= now {
                items[key] = nil
                return nil
            }
            return entry
        }

        mutating func apply(_ operation: StateOperation, now: Date) throws(StateStoreError) {
            switch operation {
            case .set(let request):
                let current = live(request.key, now: now)
                try StateETag.check(
                    key: request.key, given: request.etag, concurrency: request.concurrency, current: current?.etag)
                items[request.key] = StateEntry(
                    value: request.value, etag: nextETag(),
                    expiresAt: request.ttl.map {
                        now.addingTimeInterval(Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18)
                    })
            case .delete(let request):
                let current = live(request.key, now: now)
                try StateETag.checkDelete(
                    key: request.key, given: request.etag, concurrency: request.concurrency, current: current?.etag)
                items[request.key] = nil
            }
            writesSinceSweep += 1
            if writesSinceSweep >= 1024 { sweep(now: now) }
        }

        /// Drops expired items, so that keys written with a TTL and never read again do not pile up.
        mutating func sweep(now: Date) {
            writesSinceSweep = 0
            items = items.filter { $0.value.expiresAt.map { $0 > now } ?? true }
        }
    }

    private let storage = Mutex(Storage())
    public let features: StateFeatures = [.etag, .transactional, .ttl]

    public init() {}

    /// How many items are stored, expired or not (for tests and metrics).
    public var count: Int { storage.withLock { $0.items.count } }

    public func get(_ key: String, on eventLoop: any EventLoop) -> EventLoopFuture<StateEntry?> {
        eventLoop.makeCompletedFuture {
            try storage.withLock { storage throws(StateStoreError) in
                guard !storage.closed else { throw .closed }
                return storage.live(key, now: Date())
            }
        }
    }

    public func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        transact([.set(request)], on: eventLoop)
    }

    public func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        transact([.delete(request)], on: eventLoop)
    }

    public func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        eventLoop.makeCompletedFuture {
            try storage.withLock { storage throws(StateStoreError) in
                guard !storage.closed else { throw .closed }
                let now = Date()
                // Remember what each operation replaced, so that a failing operation can put it all back.
                var undo: [(key: String, previous: StateEntry?)] = []
                undo.reserveCapacity(operations.count)
                do throws(StateStoreError) {
                    for operation in operations {
                        undo.append((operation.key, storage.items[operation.key]))
                        try storage.apply(operation, now: now)
                    }
                } catch {
                    for (key, previous) in undo.reversed() { storage.items[key] = previous }
                    throw error
                }
            }
        }
    }

    public func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        storage.withLock {
            $0.closed = true
            $0.items = [:]
        }
        return eventLoop.makeSucceededVoidFuture()
    }
}
