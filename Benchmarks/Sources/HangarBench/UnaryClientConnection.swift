import NIOCore

/// Why a bench client's call did not return what was expected, as a caller counts it.
protocol UnaryCallFailure: Error, CustomStringConvertible {
    /// The server answered this call with an error (a gRPC status, an HTTP status): the connection carries the
    /// next call. Otherwise the connection is closed or broken and its caller stops.
    var isAnswer: Bool { get }
}

/// A bench client's connection-level handler: starts one call of a pre-encoded request and completes it with the
/// response body. Every method runs on the channel's event loop; completions are called there too.
protocol UnaryClientHandler: AnyObject {
    associatedtype Request: Sendable
    associatedtype Failure: UnaryCallFailure

    func call(_ request: Request, completion: @escaping (Result<ByteBuffer, Failure>) -> Void)
}

/// One bench client connection on a Unix socket: gRPC over HTTP/2 (`GRPCClientConnection`, calls multiplexed) or
/// HTTP/1.1 (`HTTPClientConnection`, one call at a time).
protocol UnaryClientConnection: Sendable {
    associatedtype Handler: UnaryClientHandler

    var eventLoop: any EventLoop { get }
    var handler: NIOLoopBound<Handler> { get }

    func close() async
}

extension UnaryClientConnection {
    /// One call from any thread; returns the response body.
    func call(_ request: Handler.Request) -> EventLoopFuture<ByteBuffer> {
        let handler = self.handler
        let eventLoop = self.eventLoop
        return eventLoop.flatSubmit {
            let promise = eventLoop.makePromise(of: ByteBuffer.self)
            handler.value.call(request) { result in
                promise.completeWith(result.mapError { $0 as any Error })
            }
            return promise.futureResult
        }
    }

    /// One call on every connection, all at once; fails if one of them fails.
    static func callEach(_ connections: [Self], _ request: Handler.Request) async throws {
        let futures = connections.map { $0.call(request) }
        for future in futures { _ = try await future.get() }
    }

    /// Closes every connection, one after the other.
    static func close(_ connections: [Self]) async {
        for connection in connections { await connection.close() }
    }
}
