package import AsyncHTTPClient
import Foundation
package import HangarRuntime
package import NIOCore
import NIOHTTP1

/// An app's HTTP app channel: Dapr's HTTP calls into the app (`<verb> /<method>?<query>`, `GET /healthz`) on
/// AsyncHTTPClient, over TCP or a Unix socket (`http+unix`). One `HTTPClient` serves the whole node; its pool keeps
/// connections per app address. A call from an HTTP caller streams both bodies (`invokeStreamed`); other calls
/// (a gRPC caller's, health checks) read the answer whole, at most `maxResponseBytes` of it.
package final class HTTPAppChannel: AppChannel {
    private let app: AppID
    private let address: AppChannelSpec.Address
    let client: HTTPClient
    private let maxResponseBytes: Int
    /// Dapr's `APP_API_TOKEN`, sent as `dapr-api-token` on every request (nil: none).
    private let appApiToken: String?

    package init(
        app: AppID, address: AppChannelSpec.Address, client: HTTPClient, maxResponseBytes: Int,
        appApiToken: String? = nil
    ) {
        self.app = app
        self.address = address
        self.client = client
        self.maxResponseBytes = maxResponseBytes
        self.appApiToken = appApiToken
    }

    /// Headers of the app's answer that describe the hop, not the answer.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer",
        "content-length",
    ]

    package func invoke(_ invocation: AppInvocation, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppInvocationResult>
    {
        let request: HTTPClient.Request
        do {
            let (method, uri, headers) = try Self.target(of: invocation)
            request = try self.request(method, uri: uri, headers: headers, body: .byteBuffer(invocation.data))
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return send(request, deadline: deadline, on: eventLoop).map { response in
            AppInvocationResult(
                data: response.body ?? ByteBuffer(), contentType: response.headers.first(name: "content-type") ?? "",
                metadata: Self.metadata(of: response.headers), httpStatus: Int(response.status.code))
        }
    }

    /// The verb, `/<method>?<query>` and headers of a call into the app. Dapr: an HTTP app needs the verb (a gRPC
    /// caller gives it in `http_extension`), and not CONNECT.
    static func target(of invocation: AppInvocation) throws -> (HTTPMethod, uri: String, HTTPHeaders) {
        guard let verb = invocation.verb, verb != "CONNECT" else {
            throw AppChannelError.invalidRequest(
                invocation.verb == nil ? "missing HTTP extension field" : "invalid HTTP verb: \(invocation.verb ?? "")")
        }
        let path = "/" + (invocation.method.addingPercentEncoding(withAllowedCharacters: Self.pathAllowed) ?? "")
        let uri = invocation.query.isEmpty ? path : "\(path)?\(invocation.query)"
        var headers = HTTPHeaders()
        for (name, value) in invocation.metadata { headers.add(name: name, value: value) }
        if !invocation.contentType.isEmpty { headers.replaceOrAdd(name: "content-type", value: invocation.contentType) }
        return (HTTPMethod(rawValue: verb), uri, headers)
    }

    /// The app's response headers as the caller gets them: lower-case names, without those that describe the hop
    /// and without `content-type` (which travels on its own).
    static func metadata(of headers: HTTPHeaders) -> [(name: String, value: String)] {
        var metadata: [(name: String, value: String)] = []
        for (name, value) in headers {
            let lower = name.lowercased()
            if !hopByHop.contains(lower) && lower != "content-type" { metadata.append((lower, value)) }
        }
        return metadata
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
        let request: HTTPClient.Request
        do {
            request = try self.request(.GET, uri: path, headers: [:], body: nil)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return send(request, deadline: deadline, on: eventLoop).flatMapThrowing { response in
            guard (200..<300).contains(response.status.code) else {
                throw AppChannelError.unreachable("health check answered \(response.status.code)")
            }
        }
    }

    /// `GET /dapr/subscribe` with `dapr-app-id` and `content-type: application/json`, as daprd sends it; the answer
    /// is read as `AppSubscriptionList.http` says (200 parsed, 404 none, another status none).
    package func listSubscriptions(deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppSubscriptionList>
    {
        let request: HTTPClient.Request
        do {
            request = try self.request(
                .GET, uri: "/dapr/subscribe",
                headers: ["dapr-app-id": app.appId, "content-type": "application/json"], body: nil)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return send(request, deadline: deadline, on: eventLoop).flatMapThrowing { response in
            do throws(AppSubscriptionListError) {
                return try AppSubscriptionList.http(
                    status: Int(response.status.code),
                    body: response.body?.readableBytesView ?? ByteBuffer().readableBytesView)
            } catch {
                throw AppChannelError.protocolViolation(error.message)
            }
        }
    }

    /// The shared client outlives every channel; nothing to close per app.
    package func close() {}

    /// A request to `uri` at the app's address.
    func request(_ method: HTTPMethod, uri: String, headers: HTTPHeaders, body: HTTPClient.Body?) throws
        -> HTTPClient.Request
    {
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
        if let appApiToken { headers.replaceOrAdd(name: "dapr-api-token", value: appApiToken) }
        return try HTTPClient.Request(url: url, method: method, headers: headers, body: body)
    }

    /// Makes `request` and reads its whole answer, at most `maxResponseBytes` of body.
    func send(_ request: HTTPClient.Request, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<HTTPClient.Response>
    {
        let delegate = ResponseAccumulator(request: request, maxBodySize: maxResponseBytes)
        return client.execute(
            request: request, delegate: delegate, eventLoop: .delegate(on: eventLoop), deadline: deadline
        ).futureResult.flatMapErrorThrowing { error in
            throw self.appChannelError(error)
        }
    }

    /// What a failed call into the app means for the caller.
    func appChannelError(_ error: any Error) -> any Error {
        switch error {
        case let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout:
            AppChannelError.deadlineExceeded
        case is ResponseAccumulator.ResponseTooBigError:
            AppChannelError.tooLarge(limit: maxResponseBytes)
        case let error as AppChannelError:
            error
        case let error as APIError:
            error  // the caller's streamed request was refused (over its maxRequestBytes)
        default:
            AppChannelError.unreachable("\(error)")
        }
    }

    /// What may stand unescaped in a URL path (RFC 3986 `pchar` and `/`).
    static let pathAllowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/")
}
