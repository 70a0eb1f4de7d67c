import HangarSync

/// What one tenant's operations have waited for a component pool's slots, since the pool was made: its wait
/// metrics (`hangar_component_pool_operations_total`, `hangar_component_pool_wait_seconds_total`).
package struct PoolWaits: Sendable, Hashable {
    /// Operations admitted into the pool (started), whether they waited or not.
    package var admitted = 0
    /// Their waits for a slot, added up.
    package var waited = Duration.zero
}

/// Fair sharing of one component pool between tenants: at most `capacity` operations run in the pool at once,
/// one tenant holds at most `perTenant` of those slots, and when slots free up the waiting tenants are served in
/// weighted round robin (a tenant of weight w starts up to w operations per turn). A tenant flooding a slow
/// backend therefore queues behind itself; another tenant's next operation waits for at most one free slot.
///
/// Work is started by calling its closure, outside the lock, on whichever thread freed the slot (or the caller's,
/// when a slot is free at once); the closure must only start asynchronous work and call `finished` when it ends.
final class FairQueue: Sendable {
    typealias Start = @Sendable () -> Void

    /// A queued operation and when it was queued.
    private struct Waiting {
        let start: Start
        let since: ContinuousClock.Instant
    }

    private struct TenantQueue {
        var waiting: [Waiting] = []
        var head = 0
        var running = 0
        var weight = 1
        var waitingCount: Int { waiting.count - head }

        mutating func pop() -> Waiting {
            let start = waiting[head]
            head += 1
            if head > 64 && head * 2 > waiting.count {
                waiting.removeFirst(head)
                head = 0
            }
            return start
        }
    }

    private struct State {
        var tenants: [String: TenantQueue] = [:]
        /// Tenants with waiting work, in round-robin order.
        var ring: [String] = []
        var cursor = 0
        /// Operations the tenant at `cursor` may still start this turn.
        var credit = 0
        var running = 0
        var queued = 0
        var waits: [String: PoolWaits] = [:]
    }

    let capacity: Int
    let perTenant: Int
    private let state = Locked(State())

    init(capacity: Int, perTenant: Int? = nil) {
        self.capacity = max(1, capacity)
        self.perTenant = max(1, min(perTenant ?? max(1, (capacity * 3) / 4), self.capacity))
    }

    /// Takes a slot for `tenant` if the pool and the tenant have one free and nobody is waiting (the uncontended
    /// case: no closure, no queue); the caller then runs its operation and calls `finished`. False: use `submit`.
    func tryAcquire(tenant: String) -> Bool {
        state.withLock { state in
            guard state.running < capacity, state.queued == 0 else { return false }
            var queue = state.tenants[tenant] ?? TenantQueue()
            guard queue.running < perTenant else { return false }
            queue.running += 1
            state.running += 1
            state.tenants[tenant] = queue
            state.waits[tenant, default: PoolWaits()].admitted += 1
            return true
        }
    }

    /// Starts `start` now if the pool and the tenant have a free slot and nobody is waiting, else queues it.
    func submit(tenant: String, weight: Int, _ start: @escaping Start) {
        let now = state.withLock { state -> Bool in
            var queue = state.tenants[tenant] ?? TenantQueue()
            queue.weight = max(1, weight)
            if state.running < capacity && queue.running < perTenant && queue.waitingCount == 0 && state.queued == 0 {
                queue.running += 1
                state.running += 1
                state.tenants[tenant] = queue
                state.waits[tenant, default: PoolWaits()].admitted += 1
                return true
            }
            if queue.waitingCount == 0 { state.ring.append(tenant) }
            queue.waiting.append(Waiting(start: start, since: .now))
            state.queued += 1
            state.tenants[tenant] = queue
            return false
        }
        if now {
            start()
        } else {
            drain()
        }
    }

    /// Ends one running operation of `tenant` and starts whatever may start now.
    func finished(tenant: String) {
        state.withLock { state in
            state.running -= 1
            if var queue = state.tenants[tenant] {
                queue.running -= 1
                if queue.running == 0 && queue.waitingCount == 0 {
                    state.tenants[tenant] = nil
                } else {
                    state.tenants[tenant] = queue
                }
            }
        }
        drain()
    }

    private func drain() {
        while let start = next() { start() }
    }

    /// Picks the next operation to start, weighted round robin over the tenants that wait and have a free slot.
    private func next() -> Start? {
        state.withLock { state -> Start? in
            guard state.running < capacity, !state.ring.isEmpty else { return nil }
            var visited = 0
            while visited <= state.ring.count {
                if state.cursor >= state.ring.count {
                    state.cursor = 0
                }
                let tenant = state.ring[state.cursor]
                var queue = state.tenants[tenant]!
                if state.credit <= 0 { state.credit = queue.weight }
                if queue.running < perTenant && queue.waitingCount > 0 {
                    let waiting = queue.pop()
                    state.waits[tenant, default: PoolWaits()].admitted += 1
                    state.waits[tenant, default: PoolWaits()].waited += ContinuousClock.now - waiting.since
                    queue.running += 1
                    state.running += 1
                    state.queued -= 1
                    state.credit -= 1
                    if queue.waitingCount == 0 {
                        queue.waiting = []
                        queue.head = 0
                        state.ring.remove(at: state.cursor)
                        state.credit = 0
                    } else if state.credit <= 0 {
                        state.cursor += 1
                    }
                    state.tenants[tenant] = queue
                    return waiting.start
                }
                // This tenant is at its slot limit: its turn passes.
                state.cursor += 1
                state.credit = 0
                visited += 1
            }
            return nil
        }
    }

    /// Operations admitted and their waits, per tenant that ever used the pool.
    var waits: [String: PoolWaits] { state.withLock { $0.waits } }

    /// Operations waiting and running, per tenant.
    var depths: [(tenant: String, queued: Int, running: Int)] {
        state.withLock { state in
            state.tenants.map { ($0.key, $0.value.waitingCount, $0.value.running) }
        }
    }
}
