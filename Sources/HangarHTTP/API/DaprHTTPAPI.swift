import HangarComponents
import HangarRuntime
import NIOCore
import NIOHTTP1

/// Dapr's HTTP API (`/v1.0/...`): every route, one file per building block (`DaprHTTPAPI+<Block>.swift`), compiled
/// once into one router. A new building block adds its file and one term here.
enum DaprHTTPAPI {
    typealias Route = HTTPRoute<DaprHTTPHandler>

    static let router = HTTPRouter<DaprHTTPHandler>(health + state + pubsub + secrets + invoke + metadata + notServed)
}

/// How a route of the Dapr API is answered.
enum DaprHTTPHandler: Sendable {
    /// At the request's head, with no token and no admission: health probes and the APIs this build does not serve.
    case atHead(@Sendable (DaprHTTPHead) -> HTTPResponse)
    /// Admitted at its head (who is calling, quotas, the largest body it may send), run once its body is read.
    case call(@Sendable (DaprHTTPRequest) throws -> Eventual<HTTPResponse>)
    /// Admitted at its head like `call`, then run at once: it reads the body and writes the response as they go,
    /// and settles the call with `DaprHTTPStream.finish` (service invocation).
    case stream(@Sendable (DaprHTTPStream) -> Void)
}

/// A request's head, as a route answered at its head sees it.
struct DaprHTTPHead {
    let runtime: Runtime
    let head: HTTPRequestHead
    let target: RequestTarget
    let parameters: HTTPRouteParameters
}

/// An admitted request with its body, as a building block's route sees it.
struct DaprHTTPRequest {
    let runtime: Runtime
    /// Who is calling, established by the gate.
    let caller: Caller
    let head: HTTPRequestHead
    let target: RequestTarget
    let parameters: HTTPRouteParameters
    let body: ByteBuffer
    let eventLoop: any EventLoop
}
