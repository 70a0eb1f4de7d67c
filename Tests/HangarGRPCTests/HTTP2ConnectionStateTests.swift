import Testing

@testable import HangarGRPC

/// The connection-level state on its own: the two-phase GOAWAY and the keepalive PING.
@Suite("HTTP/2 connection state")
struct HTTP2ConnectionStateTests {
    @Test("a graceful close goes active → draining → closing with the last stream id, once")
    func twoPhase() {
        var state = HTTP2ConnectionState()
        #expect(state.acceptsStreams)
        let starts = state.drain()
        #expect(starts)
        let startsAgain = state.drain()
        #expect(!startsAgain, "the first GOAWAY goes out once")
        #expect(state.phase == .draining)
        #expect(state.acceptsStreams, "streams the client opened before it saw GOAWAY are served")
        #expect(!state.isDone(openStreams: 0), "not before the final GOAWAY")
        let ack = state.receivedPingAck(HTTP2ConnectionState.drainPing)
        #expect(ack == .drain)
        let final = state.finishDrain(lastStreamID: 7)
        #expect(final == 7)
        let finalAgain = state.finishDrain(lastStreamID: 9)
        #expect(finalAgain == nil, "the final GOAWAY goes out once")
        #expect(state.phase == .closing(lastStreamID: 7))
        #expect(!state.acceptsStreams)
        #expect(state.goAwayLastStreamID(highest: 11) == 7, "a later GOAWAY never raises the last stream id")
        #expect(!state.isDone(openStreams: 1))
        #expect(state.isDone(openStreams: 0))
        let lateAck = state.receivedPingAck(HTTP2ConnectionState.drainPing)
        #expect(lateAck == .unknown)
    }

    @Test("the final GOAWAY needs a drain under way")
    func finishWithoutDrain() {
        var state = HTTP2ConnectionState()
        let final = state.finishDrain(lastStreamID: 3)
        #expect(final == nil)
        #expect(state.phase == .active)
    }

    @Test("a client's GOAWAY ends the connection with its last stream")
    func peerGoAway() {
        var state = HTTP2ConnectionState()
        #expect(!state.isDone(openStreams: 0))
        state.receivedGoAway()
        #expect(!state.isDone(openStreams: 2))
        #expect(state.isDone(openStreams: 0))
    }

    @Test("one keepalive PING at a time; only its own ACK clears it")
    func keepalive() {
        var state = HTTP2ConnectionState()
        let sent = state.sendKeepalive()
        #expect(sent)
        let sentAgain = state.sendKeepalive()
        #expect(!sentAgain)
        let drainAck = state.receivedPingAck(HTTP2ConnectionState.drainPing)
        #expect(drainAck == .unknown)
        let strangeAck = state.receivedPingAck(12345)
        #expect(strangeAck == .unknown)
        #expect(state.awaitingKeepalive)
        let ack = state.receivedPingAck(HTTP2ConnectionState.keepalivePing)
        #expect(ack == .keepalive)
        #expect(!state.awaitingKeepalive)
        let ackAgain = state.receivedPingAck(HTTP2ConnectionState.keepalivePing)
        #expect(ackAgain == .unknown)
        state.close()
        let sentAfterClose = state.sendKeepalive()
        #expect(!sentAfterClose)
        #expect(!state.isDone(openStreams: 0))
    }
}
