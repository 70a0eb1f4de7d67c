import HangarComponents
import HangarHTTP
import HangarRuntime
import HangarSystemd
import HangarTransport
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle

/// The operator's endpoint (`--metrics-listen`): a small HTTP/1.1 server of its own on one TCP listener, answering
/// `GET /metrics` with `runtime.metrics.render(gauges: runtime.gauges())`, `GET /healthz` (204 when ready, 503
/// before), `GET /healthz/detail` (the node's health as JSON: every component and tenant, `INIT`/`UP`/`DOWN`,
/// the worst state wins; 200 when `UP`, 503 otherwise) and anything else with 404. It lists every tenant, so it
/// is not on the apps' listeners.
///
/// A `Service` of the daemon's `ServiceGroup`: a bind failure ends `run()` with a `MetricsEndpointError`, which
/// stops the daemon. The node waits for `listening` (see `AfterMetricsListen`), so such a failure comes before any
/// app socket exists. On shutdown it is stopped after the node, so it can be scraped while calls drain.
struct MetricsEndpoint: Service {
    let runtime: Runtime
    let address: ListenAddress
    /// A listening socket from socket activation, used instead of binding `address`.
    let inheritedSocket: Systemd.InheritedSocket?
    let group: any EventLoopGroup
    let logger: Logger
    /// Gets one element once the endpoint listens; nothing if it never does.
    let listening: AsyncStream<Void>.Continuation
    /// Where the listener is offered to a successor process on an upgrade.
    var upgrade: UpgradeControl?

    func run() async throws {
        let responder = MetricsResponder(runtime: runtime)
        let bootstrap = ListenerBootstrap<Void>(group: group) { channel, _ in
            try HTTPServer.configure(channel, responder: responder)
        }
        let listener: Listener
        do {
            if let inheritedSocket {
                listener = try await bootstrap.adopt(socket: inheritedSocket.descriptor, address: inheritedSocket.address, identity: ())
            } else {
                listener = try await bootstrap.bind(host: address.host, port: address.port, identity: ())
            }
        } catch {
            throw MetricsEndpointError(address: Self.format(host: address.host, port: address.port), underlying: error)
        }
        upgrade?.setMetricsListener(listener)
        let port = listener.localAddress?.port ?? address.port
        let shown = inheritedSocket.map { "\($0.address) (inherited)" } ?? Self.format(host: address.host, port: port)
        logger.info(
            "metrics listening",
            metadata: [
                "metrics.listen": "\(shown)",
                "metrics.url": "http://\(inheritedSocket?.address ?? Self.format(host: address.host, port: port))/metrics",
            ])
        listening.yield()
        listening.finish()
        // Serves until the daemon shuts down (or this task is cancelled), then lets scrapes in flight finish.
        try? await gracefulShutdown()
        await listener.drain(timeout: .seconds(1))
    }

    /// `HOST:PORT`, with an IPv6 host in brackets.
    static func format(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// `GET /metrics` (any query) gets the scrape, `GET /healthz` and `/healthz/detail` the node's health;
/// everything else 404. Every answer is made from the request's head.
struct MetricsResponder: HTTPResponder {
    let runtime: Runtime

    func start(_ head: HTTPRequestHead, on channel: any Channel) -> HTTPStart<Never> {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        guard head.method == .GET else { return .respond(Self.notFound) }
        switch path {
        case "/healthz":
            return .respond(HTTPResponse(status: runtime.health.isReady ? .noContent : .serviceUnavailable))
        case "/healthz/detail":
            return .respond(
                HTTPResponse(
                    status: runtime.health.status == .up ? .ok : .serviceUnavailable,
                    headers: ["content-type": "application/json"], body: ByteBuffer(bytes: runtime.health.detailJSON())))
        case "/metrics":
            return .respond(
                HTTPResponse(
                    status: .ok, headers: ["content-type": RuntimeMetrics.contentType],
                    body: ByteBuffer(bytes: runtime.metrics.render(gauges: runtime.gauges()))))
        default:
            return .respond(Self.notFound)
        }
    }

    static let notFound = HTTPResponse(
        status: .notFound, headers: ["content-type": "text/plain; charset=utf-8"],
        body: ByteBuffer(string: "404 page not found\n"))

    func respond(to call: Never, head: HTTPRequestHead, body: ByteBuffer, on channel: any Channel)
        -> Eventual<HTTPResponse>
    {}

    func tooLarge(_ call: Never, declaredLength: Int?) -> HTTPResponse {}

    func abandon(_ call: Never) {}
}

/// Runs `service` (the node) once the metrics endpoint listens: a taken metrics port then stops start-up before
/// the node binds anything, rather than after "hangard ready".
struct AfterMetricsListen: Service {
    let listening: AsyncStream<Void>
    let service: any Service

    func run() async throws {
        // Ends with nil when the group cancels this task, as it does when the endpoint fails.
        var iterator = listening.makeAsyncIterator()
        guard await iterator.next() != nil else { throw CancellationError() }
        try await service.run()
    }
}

/// The metrics listener could not be opened (or failed while serving).
struct MetricsEndpointError: Error, CustomStringConvertible {
    var address: String
    var underlying: any Error

    var description: String { "metrics endpoint on \(address) (--metrics-listen) failed: \(underlying)" }
}
