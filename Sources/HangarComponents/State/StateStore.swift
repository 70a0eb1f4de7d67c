package import Foundation
package import NIOCore

/// What a state store can do beyond plain get/set/delete, as Dapr's components-contrib `state.Feature` list.
package struct StateFeatures: OptionSet, Sendable, Hashable {
    package let rawValue: UInt8
    package init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Optimistic concurrency with ETags (first-write / last-write).
    package static let etag = StateFeatures(rawValue: 1 << 0)
    /// All-or-nothing multi-operation transactions (`TransactionalStateStore`).
    package static let transactional = StateFeatures(rawValue: 1 << 1)
    /// Per-item expiry from the `ttlInSeconds` metadata.
    package static let ttl = StateFeatures(rawValue: 1 << 2)

    /// The names Dapr reports in `GetMetadata` for these features.
    package var daprNames: [String] {
        var names: [String] = []
        if contains(.etag) { names.append("ETAG") }
        if contains(.transactional) { names.append("TRANSACTIONAL") }
        if contains(.ttl) { names.append("TTL") }
        return names
    }
}

/// Dapr's concurrency option for a write.
package enum StateConcurrency: Sendable, Hashable {
    /// No option given: an ETag, when present, must match; without one the write always applies.
    case unspecified
    /// An ETag, when present, must match; without one the write applies only if the key does not exist.
    case firstWrite
    /// ETags are ignored; the last write wins.
    case lastWrite
}

/// A stored value as read back from a store.
package struct StateEntry: Sendable, Hashable {
    package var value: Data
    package var etag: String
    /// Wall-clock expiry, when the item was written with a TTL.
    package var expiresAt: Date?

    package init(value: Data, etag: String, expiresAt: Date? = nil) {
        self.value = value
        self.etag = etag
        self.expiresAt = expiresAt
    }
}

/// How stores group physical keys for byte accounting. A key's partition is the part before the first `||`, or the
/// whole key when it has none; the runtime puts each tenant's keys under `<namespace>||<rest>`, so a partition is a
/// tenant, but stores know nothing of that.
///
/// An item uses `key.utf8.count + value.count` bytes (its physical key and its value); a partition's usage is the sum
/// over the items physically present, expired or not (see each store for when expired items are removed).
package enum StatePartition {
    /// What ends a key's partition.
    package static let separator = "||"

    /// The partition of a physical key: the part before the first `||`, or the whole key when it has none.
    package static func of(_ key: String) -> String {
        // A plain byte scan: `firstRange(of:)` is generic over collections and cost 10 % of a SaveState call.
        let utf8 = key.utf8
        let found: String.Index?? = utf8.withContiguousStorageIfAvailable { bytes -> String.Index? in
            guard bytes.count >= 2 else { return nil }
            for offset in 0..<(bytes.count - 1) where bytes[offset] == 0x7C && bytes[offset + 1] == 0x7C {
                return utf8.index(utf8.startIndex, offsetBy: offset)
            }
            return nil
        }
        let end: String.Index?
        if let found {
            end = found
        } else {
            end = utf8.firstRange(of: separator.utf8)?.lowerBound
        }
        guard let end else { return key }
        return String(key[..<end])
    }
}

/// One write. `key` is the physical key: tenant partitioning has already been applied by the caller.
package struct StateSetRequest: Sendable, Hashable {
    package var key: String
    package var value: Data
    package var etag: String?
    package var concurrency: StateConcurrency
    /// Time to live; nil means the item never expires.
    package var ttl: Duration?
    /// The most bytes the key's partition (`StatePartition`) may hold after this write; nil means no limit.
    ///
    /// A write that would take the partition above the limit and grows it fails with
    /// `StateStoreError.byteLimitExceeded`, changing nothing (in a transaction, the whole transaction fails). A write
    /// that shrinks the partition or keeps its size always passes, so a partition over its limit can still be
    /// overwritten with smaller values. The check is atomic with the write: concurrent writers cannot overshoot.
    package var byteLimit: Int?

    package init(
        key: String, value: Data, etag: String? = nil, concurrency: StateConcurrency = .unspecified,
        ttl: Duration? = nil, byteLimit: Int? = nil
    ) {
        self.key = key
        self.value = value
        self.etag = etag
        self.concurrency = concurrency
        self.ttl = ttl
        self.byteLimit = byteLimit
    }
}

/// One delete. `key` is the physical key.
package struct StateDeleteRequest: Sendable, Hashable {
    package var key: String
    package var etag: String?
    package var concurrency: StateConcurrency

    package init(key: String, etag: String? = nil, concurrency: StateConcurrency = .unspecified) {
        self.key = key
        self.etag = etag
        self.concurrency = concurrency
    }
}

/// One operation of a transaction.
package enum StateOperation: Sendable, Hashable {
    case set(StateSetRequest)
    case delete(StateDeleteRequest)

    package var key: String {
        switch self {
        case .set(let request): request.key
        case .delete(let request): request.key
        }
    }
}

/// Errors a state store reports. The runtime maps them to Dapr's error codes.
package enum StateStoreError: Error, Sendable, Hashable {
    /// The item's ETag does not match the one given (or, for first-write without an ETag, the key exists).
    case etagMismatch(key: String)
    /// The ETag given is not one this store could have produced.
    case invalidETag(key: String, etag: String)
    /// The backend failed.
    case backend(String)
    /// The backend cannot be reached now (a server that is down, a connection refused or cut, a call past its
    /// deadline): retrying later may succeed. Answered fast, with gRPC `UNAVAILABLE`.
    case unavailable(String)
    /// The store cannot hold this key (a character its backend refuses, such as NUL in PostgreSQL's `text`):
    /// `reason` says why. Nothing was written.
    case invalidKey(key: String, reason: String)
    /// The store has been closed.
    case closed
    /// A write with a `byteLimit` would have taken `partition` to `usage` bytes, above `limit`; nothing was written.
    case byteLimitExceeded(partition: String, usage: Int, limit: Int)
}

/// The core of a state store (components-contrib's `state.Store`).
///
/// Keys are physical keys: the runtime hands each tenant a scoped handle that partitions them, so stores know
/// nothing about tenants. Operations return futures on the given event loop: a store whose work is non-blocking
/// completes them at once; one that must block runs its work elsewhere and completes them later.
package protocol StateStore: AnyObject, Sendable {
    var features: StateFeatures { get }

    /// True when every operation completes its future before returning (no blocking work, no other thread); false
    /// when work runs elsewhere and completes later: writes always, reads too unless the store can answer them at
    /// once without blocking (`state.sqlite` on the event loop).
    var executesInline: Bool { get }

    /// The bytes each partition holds now (see `StatePartition`), as last committed; partitions holding nothing are
    /// left out. Synchronous and cheap: a snapshot taken under a lock, for metrics and quota reports.
    var usageByPartition: [String: Int] { get }

    /// The entry for `key`, or nil when it does not exist or has expired.
    func get(_ key: String, on eventLoop: any EventLoop) -> Eventual<StateEntry?>

    /// Entries for many keys, in order; a failure for one key does not fail the others.
    func bulkGet(_ keys: [String], on eventLoop: any EventLoop) -> Eventual<[Result<StateEntry?, StateStoreError>]>

    func set(_ request: StateSetRequest, on eventLoop: any EventLoop) -> Eventual<Void>

    /// Deleting a missing key succeeds unless an ETag was given.
    func delete(_ request: StateDeleteRequest, on eventLoop: any EventLoop) -> Eventual<Void>

    /// Releases connections and files. Later calls fail with `StateStoreError.closed`.
    func close(on eventLoop: any EventLoop) -> EventLoopFuture<Void>
}

/// A state store that can apply several operations atomically (components-contrib's `TransactionalStore`).
package protocol TransactionalStateStore: StateStore {
    /// Applies every operation or none: the first failing operation's error is returned and nothing is written.
    func transact(_ operations: [StateOperation], on eventLoop: any EventLoop) -> Eventual<Void>
}

extension StateStore {
    package func bulkGet(
        _ keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[Result<StateEntry?, StateStoreError>]> {
        let outcomes = keys.map { key -> Eventual<Result<StateEntry?, StateStoreError>> in
            switch get(key, on: eventLoop) {
            case .ready(let result): .success(result.mapError(StateStoreError.from))
            case .later(let future): .later(future.map { .success($0) }.recover { .failure(StateStoreError.from($0)) })
            }
        }
        return Eventual.all(outcomes, on: eventLoop)
    }
}

extension StateStoreError {
    /// Any error as a store error (a foreign one as `.backend` with its description).
    package static func from(_ error: any Error) -> StateStoreError {
        error as? StateStoreError ?? .backend("\(error)")
    }
}
