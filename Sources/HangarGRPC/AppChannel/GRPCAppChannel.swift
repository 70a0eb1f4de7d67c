import Foundation
package import HangarRuntime
package import Logging
package import NIOCore
import NIOHPACK
import NIOHTTP2
import NIOPosix
import SwiftProtobuf
import Synchronization

/// An app's gRPC app channel: `AppCallback` calls on one HTTP/2 connection to the app's gRPC server (TCP or a Unix
/// socket), made when the first call needs it and made again after it closes or the app sends GOAWAY.
///
/// A call to an app that is down fails fast: a refused connection at once, an unreachable address after
/// `connectTimeout` (3 s). After a failed connection attempt, calls fail at once with that error until a backoff
/// has passed (100 ms, doubling to at most 2 s, with jitter), then the next call tries again, so an app that comes
/// back is served again within about 2 s, without a restart.
package final class GRPCAppChannel: AppChannel {
    static let onInvoke = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
    static let healthCheck = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"
    static let initialBackoff = TimeAmount.milliseconds(100)
    static let maxBackoff = TimeAmount.seconds(2)

    private struct Connection {
        let channel: any Channel
        let handler: NIOLoopBound<GRPCClientConnectionHandler>
    }

    private enum State {
        case idle
        case connecting(EventLoopFuture<Connection>)
        case ready(Connection)
        case backingOff(until: NIODeadline, error: String)
        case closed
    }

    private let app: AppID
    private let address: AppChannelSpec.Address
    private let group: any EventLoopGroup
    private let connectTimeout: TimeAmount
    private let maxResponseBytes: Int
    private let logger: Logger
    private let state = Mutex<(state: State, backoff: TimeAmount)>((.idle, GRPCAppChannel.initialBackoff))

    package init(
        app: AppID, address: AppChannelSpec.Address, group: any EventLoopGroup, connectTimeout: TimeAmount = .seconds(3),
        maxResponseBytes: Int, logger: Logger
    ) {
        self.app = app
        self.address = address
        self.group = group
        self.connectTimeout = connectTimeout
        self.maxResponseBytes = maxResponseBytes
        self.logger = logger
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

    package func checkHealth(path: String, deadline: NIODeadline, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        unary(Self.healthCheck, Google_Protobuf_Empty(), metadata: [], deadline: deadline, on: eventLoop).map { _ in }
    }

    package func close() {
        let previous = state.withLock { current -> State in
            defer { current.state = .closed }
            return current.state
        }
        switch previous {
        case .ready(let connection): connection.channel.close(promise: nil)
        case .connecting(let future): future.whenSuccess { $0.channel.close(promise: nil) }
        default: break
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
        let authority = address.authority
        return connection(on: eventLoop).flatMap { connection in
            let promise = connection.channel.eventLoop.makePromise(of: GRPCClientResponse.self)
            connection.channel.eventLoop.execute {
                connection.handler.value.call(
                    path: path, authority: authority, metadata: metadata, message: framed, deadline: deadline,
                    promise: promise)
            }
            return promise.futureResult.hop(to: eventLoop)
        }
    }

    /// The connection for a new call: the open one, the one being made, or a new one.
    private func connection(on eventLoop: any EventLoop) -> EventLoopFuture<Connection> {
        enum Next {
            case use(EventLoopFuture<Connection>)
            case fail(String)
            case connect(EventLoopPromise<Connection>)
        }
        let next = state.withLock { current -> Next in
            switch current.state {
            case .ready(let connection):
                // A connection that is going away (GOAWAY, error, closed) has already been dropped from the state
                // by its handler; one that goes away between here and the call fails that call as unreachable.
                return .use(connection.channel.eventLoop.makeSucceededFuture(connection))
            case .connecting(let future):
                return .use(future)
            case .backingOff(let until, let error) where until > .now():
                return .fail(error)
            case .closed:
                return .fail("the app channel is closed")
            default:
                let promise = group.next().makePromise(of: Connection.self)
                current.state = .connecting(promise.futureResult)
                return .connect(promise)
            }
        }
        switch next {
        case .use(let future):
            return future.hop(to: eventLoop)
        case .fail(let error):
            return eventLoop.makeFailedFuture(AppChannelError.unreachable(error))
        case .connect(let promise):
            connect(promise)
            return promise.futureResult.hop(to: eventLoop)
        }
    }

    /// Drops the connection on `channel` from the state (it is going away) so that the next call makes a new one.
    private func forget(_ channel: any Channel) {
        state.withLock { current in
            if case .ready(let ready) = current.state, ready.channel === channel { current.state = .idle }
        }
    }

    private func connect(_ promise: EventLoopPromise<Connection>) {
        let maxResponseBytes = maxResponseBytes
        let bootstrap = ClientBootstrap(group: promise.futureResult.eventLoop)
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
                    guard case .connecting = current.state else { return false }
                    current.state = .ready(connection)
                    current.backoff = Self.initialBackoff
                    return true
                }
                guard keep else {
                    connection.channel.close(promise: nil)
                    return promise.fail(AppChannelError.unreachable("the app channel is closed"))
                }
                connection.channel.closeFuture.whenComplete { _ in self.forget(connection.channel) }
                promise.succeed(connection)
            case .failure(let error):
                let message = "cannot connect to \(self.address): \(error)"
                self.state.withLock { current in
                    guard case .connecting = current.state else { return }
                    // Jitter of up to a fifth, so apps that went down together are not retried in lockstep.
                    let jitter = Int64.random(in: 0...(current.backoff.nanoseconds / 5))
                    current.state = .backingOff(until: .now() + current.backoff + .nanoseconds(jitter), error: message)
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
