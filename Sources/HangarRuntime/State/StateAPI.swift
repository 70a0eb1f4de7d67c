package import Foundation
package import HangarComponents
package import NIOCore

/// One item of a save, delete or transaction, as both front-ends decode it.
package struct StateItemRequest: Sendable, Hashable {
    package var key: String
    package var value: Data
    package var etag: String?
    package var metadata: [String: String]
    package var concurrency: StateConcurrency

    package init(
        key: String, value: Data = Data(), etag: String? = nil, metadata: [String: String] = [:],
        concurrency: StateConcurrency = .unspecified
    ) {
        self.key = key
        self.value = value
        self.etag = etag
        self.metadata = metadata
        self.concurrency = concurrency
    }
}

/// One operation of `ExecuteStateTransaction`: `operation` is Dapr's `operationType` (`upsert` or `delete`).
package struct StateTransactionOperation: Sendable, Hashable {
    package var operation: String
    package var item: StateItemRequest

    package init(operation: String, item: StateItemRequest) {
        self.operation = operation
        self.item = item
    }
}

/// A value read back.
package struct StateValue: Sendable, Hashable {
    package var data: Data
    package var etag: String
    package var metadata: [String: String]
}

/// One result of a bulk get: a value, nothing (missing key), or an error for that key alone.
package struct BulkStateValue: Sendable, Hashable {
    package var key: String
    package var value: StateValue?
    package var error: String?
}

/// The state building block: Dapr's state semantics, written once for both front-ends (as Dapr's
/// `pkg/api/universal`). Every operation takes the caller established by the gate and returns a future on the
/// caller's event loop; with a non-blocking store it is already complete.
package struct StateAPI: Sendable {
    package let components: ComponentHost
    /// Where each tenant's account (weight, `maxStateBytes`) is found; nil in tests that need no quotas.
    package let registry: TenantRegistry?
    package let metrics: RuntimeMetrics
    /// Makes ETags opaque per tenant; nil shows the stores' ETags as they are (tests).
    package let sealer: ETagSealer?

    package init(
        components: ComponentHost, registry: TenantRegistry? = nil, metrics: RuntimeMetrics = RuntimeMetrics(),
        sealer: ETagSealer? = nil
    ) {
        self.components = components
        self.registry = registry
        self.metrics = metrics
        self.sealer = sealer
    }

    func seal(_ etag: String, _ handle: TenantStateHandle) -> String {
        sealer?.seal(etag, namespace: handle.app.namespace) ?? etag
    }

    func unseal(_ etag: String?, _ handle: TenantStateHandle) -> String? {
        guard let etag, let sealer, !etag.isEmpty else { return etag }
        return sealer.unseal(etag, namespace: handle.app.namespace)
    }

    /// The key as the app wrote it, from a physical key (user keys never contain `||`).
    static func userKey(_ physicalKey: String) -> String {
        guard let range = physicalKey.range(of: Names.keySeparator, options: .backwards) else { return physicalKey }
        return String(physicalKey[range.upperBound...])
    }

    func handle(_ caller: Caller, _ store: String) throws(APIError) -> TenantStateHandle {
        try components.scoped(
            TenantStateHandle.self, named: store, for: caller, tenant: registry?.tenantAccount(caller.namespace))
    }

    static func ttl(_ metadata: [String: String], handle: TenantStateHandle) throws(APIError) -> Duration? {
        guard let text = metadata["ttlInSeconds"] else { return nil }
        guard let seconds = Int(text), seconds >= -1, seconds != 0 else {
            throw RequestError.malformed(
                "metadata ttlInSeconds '\(text)' must be a positive number of seconds, or -1 for no expiry")
        }
        guard seconds > 0 else { return nil }
        guard handle.store.features.contains(.ttl) else { throw StateAPIError.notSupported(handle.name, "TTL") }
        return .seconds(seconds)
    }

    static func responseMetadata(_ entry: StateEntry) -> [String: String] {
        guard let expiresAt = entry.expiresAt else { return [:] }
        return ["ttlExpireTime": expiresAt.formatted(.iso8601)]
    }

    static func checkETagSupport(_ etag: String?, _ handle: TenantStateHandle) throws(APIError) {
        if let etag, !etag.isEmpty, !handle.store.features.contains(.etag) {
            throw StateAPIError.notSupported(handle.name, "ETags")
        }
    }

    func setRequest(_ item: StateItemRequest, _ handle: TenantStateHandle) throws(APIError) -> StateSetRequest {
        try Self.checkETagSupport(item.etag, handle)
        return StateSetRequest(
            key: try handle.physicalKey(item.key), value: item.value, etag: unseal(item.etag, handle),
            concurrency: item.concurrency, ttl: try Self.ttl(item.metadata, handle: handle),
            byteLimit: handle.tenant?.maxStateBytes)
    }

    func deleteRequest(_ item: StateItemRequest, _ handle: TenantStateHandle) throws(APIError) -> StateDeleteRequest {
        try Self.checkETagSupport(item.etag, handle)
        return StateDeleteRequest(
            key: try handle.physicalKey(item.key), etag: unseal(item.etag, handle), concurrency: item.concurrency)
    }

    /// `GetState`: nil when the key does not exist.
    package func get(
        _ caller: Caller, store: String, key: String, on eventLoop: any EventLoop
    ) -> Eventual<StateValue?> {
        let handle: TenantStateHandle
        let physicalKey: String
        do {
            handle = try self.handle(caller, store)
            physicalKey = try handle.physicalKey(key)
        } catch {
            return .failure(error)
        }
        return handle.run(on: eventLoop) { $0.get(physicalKey, on: eventLoop) }.map { entry in
            entry.map {
                StateValue(data: $0.value, etag: self.seal($0.etag, handle), metadata: Self.responseMetadata($0))
            }
        }.mapError { StateAPIError.from($0, operation: .get, store: store) }
    }

    /// `GetBulkState`: one result per key, in order. As Dapr, an invalid key fails the whole call; a store's
    /// failure for one key is that key's error.
    package func bulkGet(
        _ caller: Caller, store: String, keys: [String], on eventLoop: any EventLoop
    ) -> Eventual<[BulkStateValue]> {
        let physicalKeys: [String]
        let handle: TenantStateHandle
        do {
            handle = try self.handle(caller, store)
            physicalKeys = try keys.map { (key) throws(APIError) in try handle.physicalKey(key) }
        } catch {
            return .failure(error)
        }
        return handle.run(on: eventLoop) { $0.bulkGet(physicalKeys, on: eventLoop) }.map { fetched in
            zip(keys, fetched).map { key, result in
                switch result {
                case .success(let entry):
                    BulkStateValue(
                        key: key,
                        value: entry.map {
                            StateValue(
                                data: $0.value, etag: self.seal($0.etag, handle), metadata: Self.responseMetadata($0))
                        },
                        error: nil)
                case .failure(let error):
                    BulkStateValue(
                        key: key, value: nil,
                        error: StateAPIError.from(error, operation: .bulkGet, store: store).message)
                }
            }
        }.mapError { StateAPIError.from($0, operation: .bulkGet, store: store) }
    }

    /// `SaveState`. Several items are applied atomically when the store is transactional (so a request never
    /// half-applies), else one by one.
    package func save(
        _ caller: Caller, store: String, items: [StateItemRequest], on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        let handle: TenantStateHandle
        let requests: [StateSetRequest]
        do {
            handle = try self.handle(caller, store)
            requests = try items.map { (item) throws(APIError) in try setRequest(item, handle) }
        } catch {
            return .failure(error)
        }
        return handle.run(on: eventLoop) { Self.apply(requests.map { .set($0) }, to: $0, on: eventLoop) }
            .mapError { self.mapError($0, caller, .save, store) }
    }

    /// `DeleteState` and `DeleteBulkState`.
    package func delete(
        _ caller: Caller, store: String, items: [StateItemRequest], on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        let handle: TenantStateHandle
        let requests: [StateDeleteRequest]
        do {
            handle = try self.handle(caller, store)
            requests = try items.map { (item) throws(APIError) in try deleteRequest(item, handle) }
        } catch {
            return .failure(error)
        }
        return handle.run(on: eventLoop) { Self.apply(requests.map { .delete($0) }, to: $0, on: eventLoop) }
            .mapError { self.mapError($0, caller, .delete, store) }
    }

    /// A write's error as the API reports it; a refusal by `maxStateBytes` is counted as a quota refusal.
    func mapError(_ error: any Error, _ caller: Caller, _ operation: StateAPIError.Operation, _ store: String)
        -> APIError
    {
        if case .byteLimitExceeded = error as? StateStoreError {
            metrics.recordQuotaRefusal(app: caller.app, quota: "maxStateBytes")
        }
        return StateAPIError.from(error, operation: operation, store: store)
    }

    /// Several writes of one request: atomically when the store is transactional (so a request never
    /// half-applies), else one by one.
    static func apply(
        _ operations: [StateOperation], to store: any StateStore, on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        if operations.count != 1, let transactional = store as? any TransactionalStateStore {
            return transactional.transact(operations, on: eventLoop)
        }
        let outcomes = operations.map { operation in
            switch operation {
            case .set(let request): store.set(request, on: eventLoop)
            case .delete(let request): store.delete(request, on: eventLoop)
            }
        }
        return outcomes.count == 1 ? outcomes[0] : Eventual.all(outcomes, on: eventLoop).map { _ in }
    }

    /// `ExecuteStateTransaction`: all operations or none.
    package func transact(
        _ caller: Caller, store: String, operations: [StateTransactionOperation], on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        let handle: TenantStateHandle
        let transactional: any TransactionalStateStore
        let requests: [StateOperation]
        do {
            handle = try self.handle(caller, store)
            guard handle.store.features.contains(.transactional),
                let store = handle.store as? any TransactionalStateStore
            else { throw StateAPIError.notSupported(store, "transaction") }
            transactional = store
            requests = try operations.map { (operation) throws(APIError) -> StateOperation in
                switch operation.operation {
                case "upsert": .set(try setRequest(operation.item, handle))
                case "delete": .delete(try deleteRequest(operation.item, handle))
                default: throw StateAPIError.unsupportedOperation(operation.operation)
                }
            }
        } catch {
            return .failure(error)
        }
        if requests.isEmpty { return .success(()) }
        return handle.run(on: eventLoop) { _ in transactional.transact(requests, on: eventLoop) }
            .mapError { self.mapError($0, caller, .transaction, store) }
    }
}
