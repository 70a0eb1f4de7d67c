import NIOCore

/// A proxied gRPC call in flight (`InvocationAPI.proxy`), between the front-end that relays it and the target
/// app's stream: it waits for a slot of the target's `maxConcurrency` and holds it until the call ends, keeps the
/// caller's first bytes until the app's stream is open (reporting itself not writable meanwhile, so the caller is
/// paused after its first message), turns the channel's failures into Dapr's errors, and counts the call once in
/// the invocation metrics when it ends, however it ends. Used on its event loop only.
final class InvocationStream: AppStream, AppStreamObserver {
    private let route: InvocationAPI.Route
    private let caller: Caller
    private let metrics: RuntimeMetrics
    private let started = NIODeadline.now()
    /// The front-end; weak, as it owns this stream.
    private weak var observer: (any AppStreamObserver)?
    /// The app's stream once it is open.
    private var app: (any AppStream)?
    /// What the caller did before the app's stream opened.
    private var pending: [ByteBuffer] = []
    private var ended = false
    private var paused = false
    private var holdsSlot = false
    private var done = false

    init(route: InvocationAPI.Route, caller: Caller, metrics: RuntimeMetrics, observer: any AppStreamObserver) {
        self.route = route
        self.caller = caller
        self.metrics = metrics
        self.observer = observer
    }

    /// Takes a slot of the target, then opens the app's stream. Called on `eventLoop`.
    func open(
        path: String, metadata: [(name: String, value: String)], deadline: NIODeadline?, on eventLoop: any EventLoop
    ) {
        let entry = route.entry
        // A slot is never refused, only waited for: this completes with success.
        entry.acquire(on: eventLoop).assumeIsolated().whenComplete { _ in
            guard !self.done else { return entry.release() }
            self.holdsSlot = true
            entry.channel.openStream(
                path: path, metadata: metadata, deadline: deadline, on: eventLoop, observer: self
            ) { result in
                switch result {
                case .success(let app): self.opened(app)
                case .failure(let error): self.appStream(finished: .failure(error))
                }
            }
        }
    }

    private func opened(_ app: any AppStream) {
        guard !done else { return app.cancel() }
        self.app = app
        for bytes in pending { app.send(bytes) }
        pending = []
        if ended { app.end() }
        if paused { app.pause() }
        if app.isWritable { observer?.appStreamWritable() }
    }

    /// The call is over: the slot goes back and the call is counted, with the app's status or the failure's.
    private func close(_ code: RPCCode) {
        done = true
        app = nil
        pending = []
        if holdsSlot {
            holdsSlot = false
            route.entry.release()
        }
        metrics.recordInvocation(
            caller: caller.app, target: route.callee, code: code,
            duration: .nanoseconds((NIODeadline.now() - started).nanoseconds))
    }

    // MARK: AppStream (from the front-end)

    var isWritable: Bool { !done && (app?.isWritable ?? false) }

    func send(_ bytes: ByteBuffer) {
        guard !done else { return }
        if let app { app.send(bytes) } else { pending.append(bytes) }
    }

    func end() {
        guard !done else { return }
        if let app { app.end() } else { ended = true }
    }

    func cancel() {
        guard !done else { return }
        app?.cancel()
        close(.cancelled)
    }

    func pause() {
        paused = true
        app?.pause()
    }

    func resume() {
        paused = false
        app?.resume()
    }

    // MARK: AppStreamObserver (from the app's stream)

    func appStream(headers: [(name: String, value: String)]) {
        if !done { observer?.appStream(headers: headers) }
    }

    func appStream(data: ByteBuffer) {
        if !done { observer?.appStream(data: data) }
    }

    func appStreamWritable() {
        if !done { observer?.appStreamWritable() }
    }

    func appStream(finished result: Result<[(name: String, value: String)], any Error>) {
        guard !done else { return }
        let outcome: Result<[(name: String, value: String)], any Error>
        let code: RPCCode
        switch result {
        case .success(let trailers):
            outcome = result
            let status = trailers.first { $0.name == "grpc-status" }.flatMap { Int($0.value) }
            code = status.flatMap(RPCCode.init(rawValue:)) ?? .unknown
        case .failure(let failure as AppChannelError):
            let error = InvocationError.failed(route.callee, failure)
            outcome = .failure(error)
            code = error.rpcCode
        case .failure(let error):
            outcome = result
            code = (error as? any DaprAPIError)?.rpcCode ?? .internal
        }
        close(code)
        observer?.appStream(finished: outcome)
    }
}
