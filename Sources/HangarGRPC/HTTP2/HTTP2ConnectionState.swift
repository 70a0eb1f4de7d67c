/// The connection-level life of a server-side HTTP/2 connection, with no channel and no timers: the two-phase
/// GOAWAY of a graceful close (as gRPC servers do it, gRFC A9) and the keepalive PING in flight.
///
/// A graceful close first sends GOAWAY with the largest stream id and a PING: the client learns that no new
/// streams are wanted, while streams it opened before reading that GOAWAY are still served. The PING's ACK
/// proves the client has seen the GOAWAY, so every stream it opened is now known; the final GOAWAY names the last
/// one, later ones are refused, and the connection closes when the streams it serves are done.
struct HTTP2ConnectionState: Equatable, Sendable {
    enum Phase: Equatable, Sendable {
        /// Serving; new streams are welcome.
        case active
        /// The first GOAWAY and its PING are out: streams still arriving are served.
        case draining
        /// The final GOAWAY is out: no stream above `lastStreamID` is served; close once none is open.
        case closing(lastStreamID: UInt32)
        case closed
    }

    /// The PING payloads the server sends: one marks the drain, the other keepalive.
    static let drainPing: UInt64 = 0x6861_6E67_6172_2D64  // "hangar-d"
    static let keepalivePing: UInt64 = 0x6861_6E67_6172_2D6B  // "hangar-k"

    private(set) var phase = Phase.active
    /// The client sent GOAWAY: it opens no more streams, so the connection ends with its last one.
    private(set) var peerWentAway = false
    /// A keepalive PING is out and its ACK has not come.
    private(set) var awaitingKeepalive = false

    /// Starts a graceful close; true when the first GOAWAY and the drain PING are to be sent now.
    mutating func drain() -> Bool {
        guard phase == .active else { return false }
        phase = .draining
        return true
    }

    /// The drain PING was acknowledged or waited for long enough: the last stream id to put in the final GOAWAY,
    /// nil when there is none to send (not draining).
    mutating func finishDrain(lastStreamID: UInt32) -> UInt32? {
        guard phase == .draining else { return nil }
        phase = .closing(lastStreamID: lastStreamID)
        return lastStreamID
    }

    /// Whether a new stream from the client is served (false: refused, it came after the final GOAWAY).
    var acceptsStreams: Bool {
        switch phase {
        case .active, .draining: true
        case .closing, .closed: false
        }
    }

    /// The last stream id for a GOAWAY sent now, `highest` being the highest the client opened: never above
    /// the final GOAWAY's, which a later GOAWAY must not raise (RFC 9113 §6.8).
    func goAwayLastStreamID(highest: UInt32) -> UInt32 {
        if case .closing(let last) = phase { return min(last, highest) }
        return highest
    }

    mutating func receivedGoAway() {
        peerWentAway = true
    }

    /// Whether the connection has nothing left to do with `openStreams` streams open.
    func isDone(openStreams: Int) -> Bool {
        guard openStreams == 0 else { return false }
        switch phase {
        case .closing: return true
        case .active, .draining: return peerWentAway
        case .closed: return false
        }
    }

    /// A keepalive PING goes out unless one is already waiting for its ACK; true when it is to be sent.
    mutating func sendKeepalive() -> Bool {
        guard !awaitingKeepalive, phase != .closed else { return false }
        awaitingKeepalive = true
        return true
    }

    /// A PING ACK from the client: which of the server's PINGs it answers.
    enum Acknowledged: Equatable {
        case keepalive
        /// The drain PING: the final GOAWAY is due.
        case drain
        case unknown
    }

    mutating func receivedPingAck(_ payload: UInt64) -> Acknowledged {
        switch payload {
        case Self.keepalivePing where awaitingKeepalive:
            awaitingKeepalive = false
            return .keepalive
        case Self.drainPing where phase == .draining:
            return .drain
        default:
            return .unknown
        }
    }

    mutating func close() {
        phase = .closed
        awaitingKeepalive = false
    }
}
