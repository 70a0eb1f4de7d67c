package import HangarComponents
package import NIOCore

extension InvocationAPI {
    /// Service invocation for a caller whose request and answer are streams (an HTTP caller), with the same target,
    /// tenancy and header rules as `invoke`. An app whose channel streams (an HTTP app) gets the body as the caller
    /// sends it, and its answer goes back as it comes: neither is held whole. Any other app (a gRPC app: `OnInvoke`
    /// is one message each way) gets the body once it has been read whole (the front-end bounds it by the caller's
    /// `maxRequestBytes`), and its answer, bounded by its channel, is handed over in one part.
    ///
    /// The target's `maxConcurrency` slot is held, and the call counted in the metrics once, until the answer's
    /// last part has been handed over or the call failed; a caller that goes away abandons the call into the app.
    package func invokeStreamed(
        _ caller: Caller, target: String, _ invocation: AppInvocation, headers: [(name: String, value: String)],
        stream: any AppInvocationStream, deadline: NIODeadline? = nil, on eventLoop: any EventLoop
    ) -> Eventual<Void> {
        call(caller, target: target, invocation, headers: headers, deadline: deadline, on: eventLoop) {
            request, entry, deadline in
            if let channel = entry.streaming {
                channel.invokeStreamed(request, stream: stream, deadline: deadline, on: eventLoop)
            } else {
                Self.invokeWhole(request, stream: stream, channel: entry.channel, deadline: deadline, on: eventLoop)
            }
        }
    }

    /// A streamed caller's call into an app that takes whole messages: reads the request body whole, makes the call
    /// with it, and hands the whole answer to `stream`.
    static func invokeWhole(
        _ invocation: AppInvocation, stream: any AppInvocationStream, channel: any AppChannel, deadline: NIODeadline,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Void> {
        readWhole(stream, into: NIOLoopBoundBox(ByteBuffer(), eventLoop: eventLoop), on: eventLoop).flatMap { data in
            var invocation = invocation
            invocation.data = data
            return channel.invoke(invocation, deadline: deadline, on: eventLoop)
        }.flatMap { result in
            stream.responseHead(
                AppResponseHead(
                    status: result.httpStatus ?? 200, contentType: result.contentType, metadata: result.metadata,
                    length: result.data.readableBytes))
            guard result.data.readableBytes > 0 else { return eventLoop.makeSucceededVoidFuture() }
            return stream.responsePart(result.data)
        }
    }

    /// The rest of `stream`'s request body appended to `body`'s (which is moved out of the box while it grows, so
    /// that it is never copied).
    private static func readWhole(
        _ stream: any AppInvocationStream, into body: NIOLoopBoundBox<ByteBuffer>, on eventLoop: any EventLoop
    ) -> EventLoopFuture<ByteBuffer> {
        stream.nextRequestPart().flatMap { part in
            guard var part else { return eventLoop.makeSucceededFuture(body.value) }
            var whole = body.value
            body.value = ByteBuffer()
            whole.writeBuffer(&part)
            body.value = whole
            return readWhole(stream, into: body, on: eventLoop)
        }
    }
}
