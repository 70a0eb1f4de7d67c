import NIOCore

/// An HTTP/1.1 keep-alive client for one connection, kept as cheap as the gRPC one: it writes pre-encoded
/// requests as they are and reads each response's status and `content-length` body by hand (no HTTP codec in the
/// pipeline). HTTP/1.1 has no multiplexing and the bench does not pipeline: one call at a time. Every method runs
/// on the channel's event loop; completions are called there too.
final class HTTPClientHandler: ChannelInboundHandler, UnaryClientHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    typealias Completion = (Result<ByteBuffer, HTTPCallError>) -> Void

    private struct Call {
        let request: HTTPClientRequest
        let completion: Completion
    }

    private var context: ChannelHandlerContext?
    private var current: Call?
    /// Response bytes read and not consumed yet.
    private var received: ByteBuffer?
    private var isClosed = false

    /// Starts a call; fails at once when another is in flight or the connection is closed.
    func call(_ request: HTTPClientRequest, completion: @escaping Completion) {
        guard let context, !isClosed, current == nil else { return completion(.failure(.closed)) }
        current = Call(request: request, completion: completion)
        context.writeAndFlush(wrapOutboundOut(request.bytes), promise: nil)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if received == nil {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        do {
            try completeIfReceived()
        } catch {
            fail(error, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        isClosed = true
        if let call = current {
            current = nil
            call.completion(.failure(.closed))
        }
        context.fireChannelInactive()
    }

    /// Completes the call in flight once its whole response has arrived.
    private func completeIfReceived() throws(HTTPCallError) {
        guard var buffer = received else { return }
        guard let call = current else { throw .protocolViolation("response bytes with no call in flight") }
        let parsed = try buffer.withUnsafeReadableBytes { bytes throws(HTTPCallError) in
            try HTTPResponseHead.parse(bytes)
        }
        guard let head = parsed, buffer.readableBytes >= head.length + head.contentLength else { return }
        buffer.moveReaderIndex(forwardBy: head.length)
        let body = buffer.readSlice(length: head.contentLength)!
        guard buffer.readableBytes == 0 else { throw .protocolViolation("more bytes than one response") }
        received = nil
        current = nil
        if head.closesConnection { isClosed = true }
        if head.status != call.request.expectedStatus {
            call.completion(.failure(.status(head.status, Self.excerpt(body))))
        } else if let expected = call.request.expectedBody, body != expected {
            call.completion(.failure(.unexpectedBody(Self.excerpt(body))))
        } else {
            call.completion(.success(body))
        }
    }

    private func fail(_ error: HTTPCallError, context: ChannelHandlerContext) {
        isClosed = true
        received = nil
        if let call = current {
            current = nil
            call.completion(.failure(error))
        }
        context.close(promise: nil)
    }

    /// The start of a body, for error messages.
    private static func excerpt(_ body: ByteBuffer) -> String {
        String(decoding: body.readableBytesView.prefix(200), as: UTF8.self)
    }
}
