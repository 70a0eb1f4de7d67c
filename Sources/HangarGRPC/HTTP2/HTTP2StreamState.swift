/// One stream's place in RFC 9113 §5.1's life cycle, as a server sees it, with no channel and no bytes: every
/// frame `HTTP2ServerConnection` reads or writes for a stream goes through one of these transitions first, so "is
/// this stream done" is one question (`isClosed`) instead of booleans re-tested wherever a stream may end.
///
/// A server never pushes, so the reserved states do not occur; `idle` is where a stream is before the client's
/// HEADERS. Local END_STREAM means the flag was *written*: an answer still queued for window keeps the stream
/// open (or half-closed (remote)), which is what stops a reset from overtaking queued DATA.
struct HTTP2StreamState: Equatable, Sendable {
    enum Phase: Equatable, Sendable {
        case idle
        case open
        /// The client sent END_STREAM; the server may still send.
        case halfClosedRemote
        /// The server wrote END_STREAM; the client may still send.
        case halfClosedLocal
        case closed
    }

    /// A frame the stream's phase does not allow, with the stream error RFC 9113 asks for.
    enum Violation: Error, Equatable {
        /// A frame after the client's END_STREAM (STREAM_CLOSED, §5.1).
        case streamClosed
        /// HEADERS that neither start the stream nor end it as trailers (PROTOCOL_ERROR, §8.1).
        case protocolError
    }

    private(set) var phase = Phase.idle

    /// The client has sent END_STREAM (or the stream was reset).
    var isRemoteClosed: Bool { phase == .halfClosedRemote || phase == .closed }
    /// The server has written END_STREAM (or the stream was reset).
    var isLocalClosed: Bool { phase == .halfClosedLocal || phase == .closed }
    var isClosed: Bool { phase == .closed }

    /// A header block from the client: the request's start, or trailers, which must end it.
    mutating func receiveHeaders(endStream: Bool) throws(Violation) {
        switch phase {
        case .idle:
            phase = endStream ? .halfClosedRemote : .open
        case .open, .halfClosedLocal:
            guard endStream else { throw .protocolError }
            receiveEndStream()
        case .halfClosedRemote, .closed:
            throw .streamClosed
        }
    }

    /// A DATA frame from the client.
    mutating func receiveData(endStream: Bool) throws(Violation) {
        switch phase {
        case .idle:
            throw .protocolError
        case .open, .halfClosedLocal:
            if endStream { receiveEndStream() }
        case .halfClosedRemote, .closed:
            throw .streamClosed
        }
    }

    /// The server wrote a frame with END_STREAM.
    mutating func sendEndStream() {
        switch phase {
        case .idle, .open: phase = .halfClosedLocal
        case .halfClosedRemote: phase = .closed
        case .halfClosedLocal, .closed: break
        }
    }

    /// RST_STREAM, sent or received: nothing more is sent or read on the stream.
    mutating func reset() {
        phase = .closed
    }

    private mutating func receiveEndStream() {
        phase = phase == .halfClosedLocal ? .closed : .halfClosedRemote
    }
}
