import AsyncHTTPClient
package import HangarRuntime
package import NIOCore
import NIOHTTP1

extension HTTPAppChannel: StreamingAppChannel {
    /// An HTTP caller's call into the app with both bodies streamed (Dapr: "the body is streamed"): the request body
    /// is written to the app as the caller's parts are pulled (with the caller's `content-length` when it declared
    /// one, else chunked), each part only once the app's connection has taken the previous one; the answer's parts
    /// are handed to the caller's stream as they come, the next one read from the app only once the caller could
    /// take the last. A caller that goes away abandons the call (the app's connection is closed).
    package func invokeStreamed(
        _ invocation: AppInvocation, stream: any AppInvocationStream, deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        let request: HTTPClient.Request
        do {
            let (method, uri, headers) = try Self.target(of: invocation)
            let body: HTTPClient.Body? =
                stream.requestLength == 0
                ? nil
                : .stream(contentLength: stream.requestLength.map { Int64($0) }) { writer in
                    HTTPAppUpload.pump(stream, to: writer, on: eventLoop)
                }
            request = try self.request(method, uri: uri, headers: headers, body: body)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
        let task = client.execute(
            request: request, delegate: HTTPAppStreamedResponse(stream: stream), eventLoop: .delegate(on: eventLoop),
            deadline: deadline)
        stream.whenCancelled { task.fail(reason: AppChannelError.cancelled) }
        return task.futureResult.flatMapErrorThrowing { error in
            throw self.appChannelError(error)
        }
    }
}

/// The request body of a streamed call into an HTTP app: one part of the caller's at a time.
enum HTTPAppUpload {
    /// Writes `stream`'s request parts to `writer` in turn, pulling the next one only once the app's connection has
    /// taken the last; the future fails (and the app's request with it) if the caller's request ends early.
    static func pump(
        _ stream: any AppInvocationStream, to writer: HTTPClient.Body.StreamWriter, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        stream.nextRequestPart().hop(to: eventLoop).flatMap { part in
            guard let part else { return eventLoop.makeSucceededVoidFuture() }
            return writer.write(.byteBuffer(part)).hop(to: eventLoop).flatMap {
                pump(stream, to: writer, on: eventLoop)
            }
        }
    }
}

/// Hands an HTTP app's answer to the caller's stream as it comes, without holding it: AsyncHTTPClient reads the
/// next part from the app only once the future of the last completes, that is once the caller could take more.
final class HTTPAppStreamedResponse: HTTPClientResponseDelegate {
    typealias Response = Void

    let stream: any AppInvocationStream

    init(stream: any AppInvocationStream) {
        self.stream = stream
    }

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        stream.responseHead(
            AppResponseHead(
                status: Int(head.status.code), contentType: head.headers.first(name: "content-type") ?? "",
                metadata: HTTPAppChannel.metadata(of: head.headers),
                length: head.headers.first(name: "content-length").flatMap { Int($0) }))
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        stream.responsePart(buffer)
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {}
}
