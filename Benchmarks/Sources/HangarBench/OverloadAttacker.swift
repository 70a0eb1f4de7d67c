import NIOCore
import NIOHTTP2
import NIOPosix

/// One attacking tenant (`AttackPlan`) on its app's gRPC socket: its connections and its `AttackTally`, all on one
/// event loop. Callable from any thread; the state lives on the loop.
struct OverloadAttacker: Sendable {
    let namespace: String
    let eventLoop: any EventLoop
    private let state: NIOLoopBound<State>

    /// Call on `eventLoop`'s thread or not: the state is created there.
    static func make(
        namespace: String, socket: String, plan: AttackPlan, eventLoop: any EventLoop
    ) async throws -> OverloadAttacker {
        let state = try await eventLoop.submit {
            NIOLoopBound(State(socket: socket, plan: plan, eventLoop: eventLoop), eventLoop: eventLoop)
        }.get()
        return OverloadAttacker(namespace: namespace, eventLoop: eventLoop, state: state)
    }

    /// Opens the plan's connections (each opens its streams once connected).
    func start() {
        eventLoop.execute { state.value.start() }
    }

    /// What the attacker has got so far.
    func tally() async throws -> AttackTally {
        try await eventLoop.submit { state.value.tally }.get()
    }

    /// Ends the attack: nothing more is opened, and every connection is closed; returns the final tally, taken
    /// before the connections closed (so `bytesHeld` is what the attack held at its end) by the first call.
    func stop() async throws -> AttackTally {
        try await eventLoop.flatSubmit {
            let state = state.value
            if let final = state.finalTally { return eventLoop.makeSucceededFuture(final) }
            let tally = state.tally
            state.finalTally = tally
            return state.stop().map { tally }
        }.get()
    }

    /// The attacker's event-loop-confined state.
    final class State: AttackConnectionHandler.Owner {
        let socket: String
        let plan: AttackPlan
        let eventLoop: any EventLoop
        var tally = AttackTally()
        /// The tally when the attack was stopped.
        var finalTally: AttackTally?
        private(set) var isStopping = false
        /// The open connections, by slot (`plan.connections` slots; a slot reconnects with `plan.reopen`).
        private var channels: [Int: any Channel] = [:]
        private var slots: [ObjectIdentifier: Int] = [:]

        init(socket: String, plan: AttackPlan, eventLoop: any EventLoop) {
            self.socket = socket
            self.plan = plan
            self.eventLoop = eventLoop
        }

        func start() {
            for slot in 0..<plan.connections { connect(slot: slot) }
        }

        private func connect(slot: Int) {
            guard !isStopping else { return }
            tally.connectionsAttempted += 1
            var connection = NIOHTTP2Handler.ConnectionConfiguration()
            connection.initialSettings = [HTTP2Setting(parameter: .enablePush, value: 0)]
            connection.headerBlockValidation = .disabled
            connection.contentLengthValidation = .disabled
            // Hangard refuses and resets streams by design here: never let the client give up on its own.
            connection.maximumConnectionGlitches = 1_000_000
            var stream = NIOHTTP2Handler.StreamConfiguration()
            stream.streamResetFrameRateLimit.maximumCount = 1_000_000
            stream.streamErrorRateLimit.maximumCount = 1_000_000
            let (connectionConfiguration, streamConfiguration) = (connection, stream)
            let handler = NIOLoopBound(
                AttackConnectionHandler(plan: plan, streams: plan.streams(onConnection: slot), owner: self),
                eventLoop: eventLoop)
            slots[ObjectIdentifier(handler.value)] = slot
            let connected = ClientBootstrap(group: eventLoop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(
                            NIOHTTP2Handler(
                                mode: .client, connectionConfiguration: connectionConfiguration,
                                streamConfiguration: streamConfiguration))
                        try sync.addHandler(handler.value)
                    }
                }
                .connect(unixDomainSocketPath: socket)
            connected.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let channel):
                    if self.isStopping {
                        channel.close(promise: nil)
                    } else {
                        self.channels[slot] = channel
                    }
                case .failure:
                    self.slots[ObjectIdentifier(handler.value)] = nil
                    self.tally.connectFailures += 1
                    self.reconnectLater(slot: slot)
                }
            }
        }

        func connectionClosed(_ handler: AttackConnectionHandler) {
            guard let slot = slots.removeValue(forKey: ObjectIdentifier(handler)) else { return }
            channels[slot] = nil
            reconnectLater(slot: slot)
        }

        private func reconnectLater(slot: Int) {
            guard plan.reopen, !isStopping else { return }
            let delay = TimeAmount.nanoseconds(Int64(plan.reopenDelay * 1_000_000_000))
            eventLoop.assumeIsolated().scheduleTask(in: delay) { self.connect(slot: slot) }
        }

        func stop() -> EventLoopFuture<Void> {
            isStopping = true
            let closing = channels.values.map { channel in
                channel.close().recover { _ in }
            }
            channels.removeAll()
            return EventLoopFuture.andAllComplete(closing, on: eventLoop)
        }
    }
}
