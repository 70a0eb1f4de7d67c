import HangarRuntime
import NIOCore
import NIOHTTP1

/// An admitted streamed request (`DaprHTTPHandler.stream`), as its route sees it: who is calling, the request's
/// route parameters, and its `HTTPExchange` to read the body from and write the response to. The route settles the
/// call with `finish` once, when its work has ended: that ends the response (or answers the error, or aborts a
/// response already under way), returns the admission's slot and counts the call in the metrics.
final class DaprHTTPStream: @unchecked Sendable {  // `settled` is only touched on the exchange's event loop
    let runtime: Runtime
    /// Who is calling, established by the gate.
    let caller: Caller
    let target: RequestTarget
    let parameters: HTTPRouteParameters
    let exchange: HTTPExchange
    private let settle: @Sendable (Result<Void, any Error>) -> Void
    private var settled = false

    init(
        runtime: Runtime, caller: Caller, target: RequestTarget, parameters: HTTPRouteParameters,
        exchange: HTTPExchange, settle: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        self.runtime = runtime
        self.caller = caller
        self.target = target
        self.parameters = parameters
        self.exchange = exchange
        self.settle = settle
    }

    var head: HTTPRequestHead { exchange.head }
    var eventLoop: any EventLoop { exchange.eventLoop }

    /// Settles the call: a success ends the response; a failure is answered with Dapr's error when no response has
    /// started, else the response is aborted. Only the first call counts.
    func finish(_ result: Result<Void, any Error>) {
        guard eventLoop.inEventLoop else { return eventLoop.execute { self.finish(result) } }
        guard !settled else { return }
        settled = true
        settle(result)
    }
}
