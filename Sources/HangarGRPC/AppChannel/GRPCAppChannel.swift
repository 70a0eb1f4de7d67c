import Foundation
package import HangarRuntime
package import Logging
package import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
package import SwiftProtobuf
import HangarSync

/// An app's gRPC app channel: `AppCallback` calls on HTTP/2 connections to the app's gRPC server (TCP or a Unix
/// socket), one per event loop that calls it, so a call never hops threads: it is written and answered on the loop
/// of the request that made it. A connection is made when the first call on its loop needs it, and made again after
/// it closes or the app sends GOAWAY.
///
/// A call to an app that is down fails fast: a refused connection at once, an unreachable address after
/// `connectTimeout` (3 s). After a failed connection attempt, calls on every loop fail at once with that error until
/// a backoff has passed (100 ms, doubling to at most 2 s, with jitter), then the next call tries again, so an app
/// that comes back is served again within about 2 s, without a restart.
package final class GRPCAppChannel: AppChannel {
    static let onInvoke = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
    static let listTopicSubscriptions = "/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions"
    static let healthCheck = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"
    static let initialBackoff = TimeAmount.milliseconds(100)
    static let maxBackoff = TimeAmount.seconds(2)

    private struct Connection {
        let channel: any Channel
        let handler: NIOLoopBound<GRPCClientConnectionHandler>
    }

    private enum Slot {
        case connecting(EventLoopFuture<Connection>)
        case ready(Connection)
    }

    /// The connections by event loop, and the backoff every loop shares (the app is down for all of them).
    private struct State {
        var slots: [ObjectIdentifier: Slot] = [:]
        var backingOff: (until: NIODeadline, error: String)?
        var backoff = GRPCAppChannel.initialBackoff
        var closed = false
    }

    private let app: AppID
    private let address: AppChannelSpec.Address
    private let connectTimeout: TimeAmount
    private let maxResponseBytes: Int
    /// Dapr's `APP_API_TOKEN`, sent as `dapr-api-token` on every call (nil: none).
    private let appApiToken: String?
    private let logger: Logger
    private let state = Locked(State())

    package init(
        app: AppID, address: AppChannelSpec.Address, connectTimeout: TimeAmount = .seconds(3), maxResponseBytes: Int,
        appApiToken: String? = nil, logger: Logger
    ) {
        self.app = app
        self.address = address
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.appApiToken = appApiToken
        self.logger = logger
    }

    /// A call's metadata with the app's API token added when one is configured.
    private func withToken(_ metadata: [(name: String, value: String)]) -> [(name: String, value: String)] {
        guard let appApiToken else { return metadata }
        return metadata + [("dapr-api-token", appApiToken)]
    }

    package func invoke(_ invocation: AppInvocation, deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppInvocationResult>
    {
        var request = Dapr_Proto_Common_V1_InvokeRequest()
        request.method = invocation.method
        request.data.typeURL = invocation.dataTypeURL
        request.data.value = Data(invocation.data.readableBytesView)
        request.contentType = invocation.contentType
        if let verb = invocation.verb {
            request.httpExtension.verb = Self.verb(verb)
            request.httpExtension.querystring = invocation.query
        }
        return unary(Self.onInvoke, request, metadata: invocation.metadata, deadline: deadline, on: eventLoop)
            .flatMapThrowing { response in
                let answer = try Dapr_Proto_Common_V1_InvokeResponse(
                    serializedBytes: Array(response.message.readableBytesView))
                var metadata: [(name: String, value: String)] = []
                for (name, value, _) in response.headers
                where !name.hasPrefix(":") && !name.hasPrefix("grpc-") && name != "content-type" {
                    metadata.append((name, value))
                }
                return AppInvocationResult(
                    data: ByteBuffer(bytes: answer.data.value), dataTypeURL: answer.data.typeURL,
                    contentType: answer.contentType, metadata: metadata)
            }
    }

    /// A streamed call (gRPC proxying) on the connection of `eventLoop`, made first when there is none.
    package func openStream(
        path: String, metadata: [(name: String, value: String)], deadline: NIODeadline?, on eventLoop: any EventLoop,
        observer: any AppStreamObserver, opened: @escaping (Result<any AppStream, AppChannelError>) -> Void
    ) {
        let authority = address.authority
        connection(on: eventLoop).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let connection):
                let stream = connection.handler.value.openStream(
                    path: path, authority: authority, metadata: self.withToken(metadata), deadline: deadline, observer: observer)
                opened(stream.map { $0 })
            case .failure(let error as AppChannelError):
                opened(.failure(error))
            case .failure(let error):
                opened(.failure(.unreachable("\(error)")))
            }
        }
    }

    package func checkHealth(path: String, deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        unary(Self.healthCheck, Google_Protobuf_Empty(), metadata: [], deadline: deadline, on: eventLoop).map { _ in }
    }

    /// `AppCallback.ListTopicSubscriptions`; UNIMPLEMENTED is no subscriptions (reference §2b).
    package func listSubscriptions(deadline: NIODeadline, on eventLoop: any EventLoop)
        -> EventLoopFuture<AppSubscriptionList>
    {
        unary(
            path: Self.listTopicSubscriptions, message: Google_Protobuf_Empty(),
            as: Dapr_Proto_Runtime_V1_ListTopicSubscriptionsResponse.self, deadline: deadline, on: eventLoop
        ).map { response in
            AppSubscriptionList(entries: response.subscriptions.map(Self.entry), withoutRoutes: .plainRule)
        }.flatMapErrorThrowing { error in
            if case AppChannelError.status(code: .unimplemented, _) = error { return AppSubscriptionList() }
            throw error
        }
    }

    /// A `TopicSubscription` in the runtime's terms: with no `routes`, or empty ones, no rule and no default.
    static func entry(_ subscription: Dapr_Proto_Runtime_V1_TopicSubscription) -> AppSubscriptionList.Entry {
        AppSubscriptionList.Entry(
            pubsubName: subscription.pubsubName, topic: subscription.topic, metadata: subscription.metadata,
            rules: subscription.routes.rules.map { ($0.match, $0.path) }, defaultPath: subscription.routes.default,
            deadLetterTopic: subscription.deadLetterTopic,
            bulk: subscription.hasBulkSubscribe
                ? (
                    subscription.bulkSubscribe.enabled, Int(subscription.bulkSubscribe.maxMessagesCount),
                    Int(subscription.bulkSubscribe.maxAwaitDurationMs)
                ) : nil)
    }

    /// One unary `AppCallback` call: `message` to `path` with `metadata` as request headers, the answer decoded as
    /// `Response`. The app's gRPC error status fails it with `AppChannelError.status`; an answer that does not
    /// decode with `.protocolViolation`. The future completes on `eventLoop`.
    package func unary<Response: SwiftProtobuf.Message>(
        path: String, message: some SwiftProtobuf.Message, as response: Response.Type,
        metadata: [(name: String, value: String)] = [], deadline: NIODeadline, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Response> {
        unary(path, message, metadata: metadata, deadline: deadline, on: eventLoop).flatMapThrowing { answer in
            do {
                return try Response(serializedBytes: Array(answer.message.readableBytesView))
            } catch {
                throw AppChannelError.protocolViolation("the answer to \(path) is not a \(Response.protoMessageName)")
            }
        }
    }

    package func close() {
        let slots = state.withLock { current -> [Slot] in
            current.closed = true
            defer { current.slots.removeAll() }
            return Array(current.slots.values)
        }
        for slot in slots {
            switch slot {
            case .ready(let connection): connection.channel.close(promise: nil)
            case .connecting(let future): future.whenSuccess { $0.channel.close(promise: nil) }
            }
        }
    }

    private func unary(
        _ path: String, _ message: some SwiftProtobuf.Message, metadata: [(name: String, value: String)],
        deadline: NIODeadline, on eventLoop: any EventLoop
    ) -> EventLoopFuture<GRPCClientResponse> {
        let framed: ByteBuffer
        do {
            framed = try GRPCService.frame(message)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        return call(path, framed: framed, metadata: metadata, deadline: deadline, on: eventLoop)
    }

    /// One unary call with an already framed request message.
    private func call(
        _ path: String, framed: ByteBuffer, metadata: [(name: String, value: String)], deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<GRPCClientResponse> {
        let authority = address.authority
        // The connection lives on `eventLoop`: the closure runs there, so the handler is used on its own loop.
        return connection(on: eventLoop).flatMap { connection in
            let promise = eventLoop.makePromise(of: GRPCClientResponse.self)
            connection.handler.value.call(
                path: path, authority: authority, metadata: self.withToken(metadata), message: framed, deadline: deadline,
                promise: promise)
            return promise.futureResult
        }
    }

    /// The connection on `eventLoop` for a new call: the open one, the one being made, or a new one.
    private func connection(on eventLoop: any EventLoop) -> EventLoopFuture<Connection> {
        enum Next {
            case use(EventLoopFuture<Connection>)
            case fail(String)
            case connect(EventLoopPromise<Connection>)
        }
        let key = ObjectIdentifier(eventLoop)
        let next = state.withLock { current -> Next in
            if current.closed { return .fail("the app channel is closed") }
            switch current.slots[key] {
            case .ready(let connection):
                // A connection that is going away (GOAWAY, error, closed) has already been dropped by its handler;
                // one that goes away between here and the call fails that call as unreachable.
                return .use(eventLoop.makeSucceededFuture(connection))
            case .connecting(let future):
                return .use(future)
            case nil:
                if let backingOff = current.backingOff, backingOff.until > .now() { return .fail(backingOff.error) }
                let promise = eventLoop.makePromise(of: Connection.self)
                current.slots[key] = .connecting(promise.futureResult)
                return .connect(promise)
            }
        }
        switch next {
        case .use(let future):
            return future
        case .fail(let error):
            return eventLoop.makeFailedFuture(AppChannelError.unreachable(error))
        case .connect(let promise):
            connect(on: eventLoop, promise)
            return promise.futureResult
        }
    }

    /// Drops the connection on `channel` (it is going away) so that the next call on its loop makes a new one.
    private func forget(_ channel: any Channel) {
        state.withLock { current in
            let key = ObjectIdentifier(channel.eventLoop)
            if case .ready(let ready) = current.slots[key], ready.channel === channel { current.slots[key] = nil }
        }
    }

    private func connect(on eventLoop: any EventLoop, _ promise: EventLoopPromise<Connection>) {
        let key = ObjectIdentifier(eventLoop)
        let maxResponseBytes = maxResponseBytes
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(
                        NIOHTTP2Handler(mode: .client, initialSettings: GRPCClientConnectionHandler.settings))
                    try sync.addHandler(
                        GRPCClientConnectionHandler(maxResponseBytes: maxResponseBytes) { [weak self] in
                            self?.forget(channel)
                        })
                }
            }
        let connected: EventLoopFuture<any Channel> =
            switch address {
            case .tcp(let host, let port): bootstrap.connect(host: host, port: port)
            case .unix(let path): bootstrap.connect(unixDomainSocketPath: path)
            }
        connected.flatMapThrowing { channel -> Connection in
            let handler = try channel.pipeline.syncOperations.handler(type: GRPCClientConnectionHandler.self)
            return Connection(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
        }.whenComplete { result in
            switch result {
            case .success(let connection):
                let keep = self.state.withLock { current -> Bool in
                    guard !current.closed, case .connecting = current.slots[key] else { return false }
                    current.slots[key] = .ready(connection)
                    current.backingOff = nil
                    current.backoff = Self.initialBackoff
                    return true
                }
                guard keep else {
                    connection.channel.close(promise: nil)
                    return promise.fail(AppChannelError.unreachable("the app channel is closed"))
                }
                connection.channel.closeFuture.whenComplete { _ in self.forget(connection.channel) }
                // On the loop's next turn: the connect future completes before `channelActive` has reached the
                // HTTP/2 handler, and a call written now would go out ahead of the connection preface.
                eventLoop.execute { promise.succeed(connection) }
            case .failure(let error):
                let message = "cannot connect to \(self.address): \(error)"
                self.state.withLock { current in
                    current.slots[key] = nil
                    // Jitter of up to a fifth, so apps that went down together are not retried in lockstep.
                    let jitter = Int64.random(in: 0...(current.backoff.nanoseconds / 5))
                    current.backingOff = (.now() + current.backoff + .nanoseconds(jitter), message)
                    current.backoff = min(current.backoff * 2, Self.maxBackoff)
                }
                self.logger.debug(
                    "app channel connection failed", metadata: ["app": "\(self.app)", "error": "\(message)"])
                promise.fail(AppChannelError.unreachable(message))
            }
        }
    }

    /// `HTTPExtension.Verb` of an HTTP method name (unknown names are NONE).
    static func verb(_ name: String) -> Dapr_Proto_Common_V1_HTTPExtension.Verb {
        switch name.uppercased() {
        case "GET": .get
        case "HEAD": .head
        case "POST": .post
        case "PUT": .put
        case "DELETE": .delete
        case "CONNECT": .connect
        case "OPTIONS": .options
        case "TRACE": .trace
        case "PATCH": .patch
        default: .none
        }
    }
}

extension AppChannelSpec.Address {
    /// The `:authority` of calls to this address.
    var authority: String {
        switch self {
        case .tcp: description
        case .unix: "localhost"
        }
    }
}
