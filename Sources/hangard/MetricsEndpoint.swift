import HTTPTypes
import HangarHTTP
import HangarRuntime
import HangarSystemd
import HummingbirdCore
import Logging
import NIOCore
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

    func run() async throws {
        let runtime = runtime
        let logger = logger
        let listening = listening
        let host = address.host
        // Hummingbird logs its own "listening" at info; this service logs that line itself, with the port bound.
        var serverLogger = logger
        if serverLogger.logLevel < .notice { serverLogger.logLevel = .notice }
        let respond: HTTPChannelHandler.Responder = { request, responseWriter, _ in
            let (head, body) = Self.respond(to: request, runtime: runtime)
            try await responseWriter.write(response: head, body: body)
        }
        let inherited = inheritedSocket
        let onRunning: @Sendable (any Channel) async -> Void = { channel in
            let port = channel.localAddress?.port ?? 0
            let shown = inherited.map { "\($0.address) (inherited)" } ?? Self.format(host: host, port: port)
            logger.info(
                "metrics listening",
                metadata: [
                    "metrics.listen": "\(shown)",
                    "metrics.url": "http://\(inherited?.address ?? Self.format(host: host, port: port))/metrics",
                ])
            listening.yield()
            listening.finish()
        }
        let server: any Service =
            if let inherited {
                InheritedSocketServer(
                    descriptor: inherited.descriptor, childChannel: HTTP1Channel(responder: respond), group: group,
                    logger: serverLogger, onRunning: onRunning)
            } else {
                try HTTPServerBuilder.http1().buildServer(
                    configuration: ServerConfiguration(address: .hostname(host, port: address.port), serverName: nil),
                    eventLoopGroup: group, logger: serverLogger, responder: respond, onServerRunning: onRunning)
            }
        do {
            try await server.run()
        } catch let error as CancellationError {
            throw error
        } catch {
            throw MetricsEndpointError(address: Self.format(host: host, port: address.port), underlying: error)
        }
    }

    /// `GET /metrics` (any query) gets the scrape, `GET /healthz` and `/healthz/detail` the node's health;
    /// everything else 404.
    static func respond(to request: Request, runtime: Runtime) -> (HTTPResponse, ResponseBody) {
        if request.method == .get, request.uri.path == "/healthz" {
            return (head(runtime.health.isReady ? .noContent : .serviceUnavailable, contentType: nil, length: 0), ResponseBody())
        }
        if request.method == .get, request.uri.path == "/healthz/detail" {
            let body = ByteBuffer(bytes: runtime.health.detailJSON())
            let status: HTTPResponse.Status = runtime.health.status == .up ? .ok : .serviceUnavailable
            return (head(status, contentType: "application/json", length: body.readableBytes), ResponseBody(byteBuffer: body))
        }
        guard request.method == .get, request.uri.path == "/metrics" else {
            let body = ByteBuffer(string: "404 page not found\n")
            let head = head(.notFound, contentType: "text/plain; charset=utf-8", length: body.readableBytes)
            return (head, ResponseBody(byteBuffer: body))
        }
        let body = ByteBuffer(bytes: runtime.metrics.render(gauges: runtime.gauges()))
        return (
            head(.ok, contentType: RuntimeMetrics.contentType, length: body.readableBytes),
            ResponseBody(byteBuffer: body)
        )
    }

    private static func head(_ status: HTTPResponse.Status, contentType: String?, length: Int) -> HTTPResponse {
        var fields = HTTPFields()
        if let contentType { fields[.contentType] = contentType }
        fields[.contentLength] = String(length)
        return HTTPResponse(status: status, headerFields: fields)
    }

    /// `HOST:PORT`, with an IPv6 host in brackets.
    static func format(host: String, port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
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
