import Foundation
package import NIOCore
import HangarSync

/// `state.in-memory`: a dictionary behind a mutex. Every operation is non-blocking and completes at once on the
/// caller's event loop. Supports ETags, transactions and TTLs; data is lost when the daemon stops.
///
/// Byte accounting (`usageByPartition`) counts every item physically present, expired or not. Expired items are
/// removed when their key is read or written, by a sweep every 1024 writes, by `purgeExpired(on:)`, and, for the
/// partition concerned, before a write is refused with `byteLimitExceeded`: a partition is never refused because of
/// items that have already expired.
package final class InMemoryStateStore: TransactionalStateStore {
    private struct Storage {
        /// Change `items` only through `put`, which keeps `usage` and `earliestExpiry` in step.
        private(set) var items: [String: StateEntry] = [:]
        /// Bytes per partition of the items above, expired or not; partitions holding nothing are left out.
        private(set) var usage: [String: Int] = [:]
        /// Per partition, no later than the earliest expiry of its items with a TTL: a lower bound that may be stale
        /// (the item overwritten or deleted since), so that a partition is only searched for expired items when
        /// one may really be there.
        private var earliestExpiry: [String: Date] = [:]
        var version: UInt64 = 0
        var writesSinceSweep = 0
        var closed = false

        static func bytes(_ key: String, _ entry: StateEntry) -> Int { key.utf8.count + entry.value.count }

        static func isExpired(_ entry: StateEntry, now: Date) -> Bool {
            entry.expiresAt.map { $0 <= now } ?? false
        }

        mutating func nextETag() -> String {
            version += 1
            return StateETag.string(version)
        }

        /// Stores `entry` under `key` (removes the key when nil), accounting for the bytes it adds and removes.
        mutating func put(_ key: String, _ entry: StateEntry?) {
            let previous: StateEntry?
            if let entry {
                previous = items.updateValue(entry, forKey: key)
            } else {
                previous = items.removeValue(forKey: key)
            }
            let delta = (entry.map { Self.bytes(key, $0) } ?? 0) - (previous.map { Self.bytes(key, $0) } ?? 0)
            let expiresAt = entry?.expiresAt
            // An overwrite of the same size without a TTL (the common case) needs no partition.
            guard delta != 0 || expiresAt != nil else { return }
            let partition = StatePartition.of(key)
            if delta != 0 {
                let total = usage[partition, default: 0] + delta
                usage[partition] = total > 0 ? total : nil
            }
            if let expiresAt, earliestExpiry[partition].map({ expiresAt < $0 }) ?? true {
                earliestExpiry[partition] = expiresAt
            }
        }

        /// The live entry for a key, dropping it when it has expired.
        mutating func live(_ key: String, now: Date) -> StateEntry? {
            guard let entry = items[key] else { return nil }
            if Self.isExpired(entry, now: now) {
                put(key, nil)
                return nil
            }
            return entry
        }

        mutating func apply(_ operation: StateOperation, now: Date) throws(StateStoreError) {
            switch operation {
            case .set(let request):
                // The ETag rule sees expired items as absent; the byte count compares with what is physically there.
                let physical = items[request.key]
                let current = physical.flatMap { Self.isExpired($0, now: now) ? nil : $0 }
                try StateETag.check(
                    key: request.key, given: request.etag, concurrency: request.concurrency, current: current?.etag)
                let delta =
                    request.key.utf8.count + request.value.count - (physical.map { Self.bytes(request.key, $0) } ?? 0)
                if let limit = request.byteLimit, delta > 0 {
                    let partition = StatePartition.of(request.key)
                    let after = usage[partition, default: 0] + delta
                    if after > limit { throw .byteLimitExceeded(partition: partition, usage: after, limit: limit) }
                }
                put(
                    request.key,
                    StateEntry(
                        value: request.value, etag: nextETag(),
                        expiresAt: request.ttl.map {
                            now.addingTimeInterval(
                                Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18)
                        }))
            case .delete(let request):
                let current = live(request.key, now: now)
                try StateETag.checkDelete(
                    key: request.key, given: request.etag, concurrency: request.concurrency, current: current?.etag)
                put(request.key, nil)
            }
            writesSinceSweep += 1
            if writesSinceSweep >= 1024 { sweep(now: now) }
        }

        /// Applies every operation or, when one fails, puts back what the earlier ones replaced and rethrows.
        mutating func applyAll(_ operations: [StateOperation], now: Date) throws(StateStoreError) {
            var undo: [(key: String, previous: StateEntry?)] = []
            undo.reserveCapacity(operations.count)
            do throws(StateStoreError) {
                for operation in operations {
                    undo.append((operation.key, items[operation.key]))
                    try apply(operation, now: now)
                }
            } catch {
                for (key, previous) in undo.reversed() { put(key, previous) }
                throw error
            }
        }

        /// Drops every expired item, so that keys written with a TTL and never read again do not pile up, and
        /// returns how many there were.
        @discardableResult
        mutating func sweep(now: Date) -> Int {
            writesSinceSweep = 0
            let expired = items.compactMap { Self.isExpired($0.value, now: now) ? $0.key : nil }
            for key in expired { put(key, nil) }
            earliestExpiry = [:]
            for (key, entry) in items {
                guard let expiresAt = entry.expiresAt else { continue }
                let partition = StatePartition.of(key)
                if earliestExpiry[partition].map({ expiresAt < $0 }) ?? true { earliestExpiry[partition] = expiresAt }
            }
            return expired.count
        }

        /// Drops the expired items of one partition and returns how many there were. Searches the items only when
        /// one of the partition's may have expired.
        mutating func sweep(partition: String, now: Date) -> Int {
            guard let earliest = earliestExpiry[partition], earliest <= now else { return 0 }
            let prefix = partition + StatePartition.separator
            var expired: [String] = []
            var remaining: Date?
            for (key, entry) in items where key == partition || key.hasPrefix(prefix) {
                guard let expiresAt = entry.expiresAt else { continue }
                if expiresAt <= now {
                    expired.append(key)
                } else if remaining.map({ expiresAt < $0 }) ?? true {
                    remaining = expiresAt
                }
            }
            for key in expired { put(key, nil) }
            earliestExpiry[partition] = remaining
            return expired.count
        }

        mutating func removeAll() {
            items = [:]
            usage = [:]
            earliestExpiry = [:]
        }
    }

    private let storage = Locked(Storage())
    package let features: StateFeatures = [.etag, .transactional, .ttl]
    /// Always true: every operation is `.ready` when it returns.
    package var executesInline: Bool { true }

    package init() {}

    /// How many items are stored, expired or not (for tests and metrics).
    package var count: Int { storage.withLock { $0.items.count } }

    package var usageByPartition: [String: Int] { storage.withLock { $0.usage } }

    package func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?> {
        Eventual {
            try storage.withLock { storage throws(StateStoreError) in
                guard !storage.closed else { throw .closed }
                return storage.live(key, now: Date())
            }
        }
    }

    package func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.set(request)], on: eventLoop)
    }

    package func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void> {
        transact([.delete(request)], on: eventLoop)
    }

    /// Applies every operation or none. A transaction refused with `byteLimitExceeded` is tried again once the
    /// partition's expired items are removed, if it had any.
    package func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void> {
        Eventual {
            try storage.withLock { storage throws(StateStoreError) in
                guard !storage.closed else { throw .closed }
                let now = Date()
                while true {
                    do throws(StateStoreError) {
                        return try storage.applyAll(operations, now: now)
                    } catch {
                        // Each retry removes at least one item, so this ends.
                        guard case .byteLimitExceeded(let partition, _, _) = error,
                            storage.sweep(partition: partition, now: now) > 0
                        else { throw error }
                    }
                }
            }
        }
    }

    /// Removes every expired item now and returns how many there were (the same as `SQLiteStateStore`'s, which
    /// also runs periodically).
    package func purgeExpired(on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        eventLoop.makeCompletedFuture {
            try storage.withLock { storage throws(StateStoreError) in
                guard !storage.closed else { throw .closed }
                return storage.sweep(now: Date())
            }
        }
    }

    package func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        storage.withLock {
            $0.closed = true
            $0.removeAll()
        }
        return eventLoop.makeSucceededVoidFuture()
    }
}
