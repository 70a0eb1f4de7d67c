package import AsyncHTTPClient
import Foundation
package import HangarRuntime
package import NIOCore
import NIOHTTP1

/// An app's HTTP app channel: Dapr's HTTP calls into the app (`<verb> /<method>?<query>`, `GET /healthz`) on
/// AsyncHTTPClient, over TCP or a Unix socket (`http+unix`). One `HTTPClient` serves the whole node; its pool keeps
/// connections per app address. Bodies are read up to `maxResponseBytes`.
package final class HTTPAppChannel: AppChannel {
    private let app: AppID
    private let address: AppChannelSpec.Address
    private let client: HTTPClient
    private let maxResponseBytes: Int

    package init(app: AppID, address: AppChannelSpec.Address, client: HTTPClient, maxResponseBytes: Int) {
        self.app = app
        self.address = address
        self.client = client
        self.maxResponseBytes = maxResponseBytes
    }

    /// Headers of the app's answer that describe the hop, not the answer.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
        "content-length",
    ]

    package func invoke(_ invocation: AppInvocation, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppInvocationResult>
    {
        guard let verb = invocation.verb, verb != "CONNECT" else {
            // Dapr: an HTTP app needs the verb; a gRPC caller gives it in http_extension.
            return eventLoop.makeFailedFuture(
                AppChannelError.invalidRequest(
                    invocation.verb == nil ? "missing HTTP extension field" : "invalid HTTP verb: \(invocation.verb ?? "")"))
        }
        let path = "/" + (invocation.method.addingPercentEncoding(withAllowedCharacters: Self.pathAllowed) ?? "")
        let uri = invocation.query.isEmpty ? path : "\(path)?\(invocation.query)"
        var headers = HTTPHeaders()
        for (name, value) in invocation.metadata { headers.add(name: name, value: value) }
        if !invocation.contentType.isEmpty { headers.replaceOrAdd(name: "content-type", value: invocation.contentType) }
        return send(HTTPMethod(rawValue: verb), uri: uri, headers: headers, body: invocation.data, deadline: deadline,
            on: eventLoop
        ).map { response in
            var metadata: [(name: String, value: String)] = []
            for (name, value) in response.headers where !Self.hopByHop.contains(name.lowercased()) {
                if name.lowercased() != "content-type" { metadata.append((name.lowercased(), value)) }
            }
            return AppInvocationResult(
                data: response.body ?? ByteBuffer(), contentType: response.headers.first(name: "content-type") ?? "",
                metadata: metadata, httpStatus: Int(response.status.code))
        }
    }

    /// gRPC proxying needs the app's own gRPC server: an HTTP app cannot be proxied to.
    package func openStream(
        path: String, metadata: [(name: String, value: String)], deadline: NIODeadline?, on eventLoop: any EventLoop,
        observer: any AppStreamObserver, opened: @escaping (Result<any AppStream, AppChannelError>) -> Void
    ) {
        opened(
            .failure(
                .invalidRequest(
                    "app \(app) declares an HTTP app channel: gRPC calls can be proxied only to an app with "
                        + "appChannel protocol grpc")))
    }

    package func checkHealth(path: String, deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        send(.GET, uri: path, headers: [:], body: nil, deadline: deadline, on: eventLoop).flatMapThrowing { response in
            guard (200..<300).contains(response.status.code) else {
                throw AppChannelError.unreachable("health check answered \(response.status.code)")
            }
        }
    }

    /// The shared client outlives every channel; nothing to close per app.
    package func close() {}

    private func send(
        _ method: HTTPMethod, uri: String, headers: HTTPHeaders, body: ByteBuffer?, deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<HTTPClient.Response> {
        let request: HTTPClient.Request
        do {
            let url: URL? =
                switch address {
                case .tcp: URL(string: "http://\(address.description)\(uri)")
                case .unix(let path): URL(httpURLWithSocketPath: path, uri: uri)
                }
            guard let url else { throw AppChannelError.invalidRequest("cannot address \(address) with \(uri)") }
            var headers = headers
            if case .unix = address {
                // AsyncHTTPClient would send the socket path as the Host; apps (h11, Go's net/http) refuse that.
                headers.replaceOrAdd(name: "host", value: "localhost")
            }
            request = try HTTPClient.Request(url: url, method: method, headers: headers, body: body.map { .byteBuffer($0) })
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let delegate = ResponseAccumulator(request: request, maxBodySize: maxResponseBytes)
        return client.execute(
            request: request, delegate: delegate, eventLoop: .delegate(on: eventLoop), deadline: deadline
        ).futureResult.flatMapErrorThrowing { error in
            switch error {
            case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout:
                throw AppChannelError.deadlineExceeded
            case is ResponseAccumulator.ResponseTooBigError:
                throw AppChannelError.protocolViolation("the answer is over \(self.maxResponseBytes) bytes")
            default:
                throw AppChannelError.unreachable("\(error)")
            }
        }
    }

    /// What may stand unescaped in a URL path (RFC 3986 `pchar` and `/`).
    static let pathAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/")
}
