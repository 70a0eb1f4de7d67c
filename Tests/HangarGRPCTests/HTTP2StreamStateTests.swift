import NIOCore
import Testing

@testable import HangarGRPC

/// The pure per-stream parts of the HTTP/2 connection: life-cycle transitions and the outbound queue.
@Suite("HTTP/2 stream state")
struct HTTP2StreamStateTests {
    typealias Phase = HTTP2StreamState.Phase

    enum Event: CustomStringConvertible {
        case headers(endStream: Bool)
        case data(endStream: Bool)
        case sendEnd
        case reset

        var description: String {
            switch self {
            case .headers(let end): "HEADERS\(end ? "+END_STREAM" : "")"
            case .data(let end): "DATA\(end ? "+END_STREAM" : "")"
            case .sendEnd: "send END_STREAM"
            case .reset: "RST_STREAM"
            }
        }
    }

    /// Drives a fresh stream to `phase` through legal events.
    static func stream(in phase: Phase) throws -> HTTP2StreamState {
        var state = HTTP2StreamState()
        switch phase {
        case .idle: break
        case .open: try state.receiveHeaders(endStream: false)
        case .halfClosedRemote: try state.receiveHeaders(endStream: true)
        case .halfClosedLocal:
            try state.receiveHeaders(endStream: false)
            state.sendEndStream()
        case .closed: state.reset()
        }
        #expect(state.phase == phase)
        return state
    }

    @Test(
        "every event in every phase moves the stream as RFC 9113 §5.1 says, or is the stream error it names",
        arguments: [
            (Phase.idle, Event.headers(endStream: false), Result<Phase, HTTP2StreamState.Violation>.success(.open)),
            (.idle, .headers(endStream: true), .success(.halfClosedRemote)),
            (.idle, .data(endStream: false), .failure(.protocolError)),
            (.idle, .sendEnd, .success(.halfClosedLocal)),
            (.idle, .reset, .success(.closed)),
            (.open, .headers(endStream: true), .success(.halfClosedRemote)),
            (.open, .headers(endStream: false), .failure(.protocolError)),
            (.open, .data(endStream: false), .success(.open)),
            (.open, .data(endStream: true), .success(.halfClosedRemote)),
            (.open, .sendEnd, .success(.halfClosedLocal)),
            (.open, .reset, .success(.closed)),
            (.halfClosedRemote, .headers(endStream: true), .failure(.streamClosed)),
            (.halfClosedRemote, .data(endStream: false), .failure(.streamClosed)),
            (.halfClosedRemote, .sendEnd, .success(.closed)),
            (.halfClosedRemote, .reset, .success(.closed)),
            (.halfClosedLocal, .headers(endStream: true), .success(.closed)),
            (.halfClosedLocal, .headers(endStream: false), .failure(.protocolError)),
            (.halfClosedLocal, .data(endStream: false), .success(.halfClosedLocal)),
            (.halfClosedLocal, .data(endStream: true), .success(.closed)),
            (.halfClosedLocal, .sendEnd, .success(.halfClosedLocal)),
            (.halfClosedLocal, .reset, .success(.closed)),
            (.closed, .headers(endStream: true), .failure(.streamClosed)),
            (.closed, .data(endStream: true), .failure(.streamClosed)),
            (.closed, .sendEnd, .success(.closed)),
            (.closed, .reset, .success(.closed)),
        ] as [(Phase, Event, Result<Phase, HTTP2StreamState.Violation>)])
    func transition(from phase: Phase, event: Event, expected: Result<Phase, HTTP2StreamState.Violation>) throws {
        var state = try Self.stream(in: phase)
        let outcome: Result<Phase, HTTP2StreamState.Violation>
        do throws(HTTP2StreamState.Violation) {
            switch event {
            case .headers(let endStream): try state.receiveHeaders(endStream: endStream)
            case .data(let endStream): try state.receiveData(endStream: endStream)
            case .sendEnd: state.sendEndStream()
            case .reset: state.reset()
            }
            outcome = .success(state.phase)
        } catch {
            outcome = .failure(error)
            #expect(state.phase == phase, "a refused frame leaves the stream as it was")
        }
        #expect(outcome == expected, "\(phase) + \(event)")
    }

    @Test("each side's closure reads from the phase")
    func closedSides() throws {
        #expect(try !Self.stream(in: .open).isRemoteClosed)
        #expect(try Self.stream(in: .halfClosedRemote).isRemoteClosed)
        #expect(try !Self.stream(in: .halfClosedRemote).isLocalClosed)
        #expect(try Self.stream(in: .halfClosedLocal).isLocalClosed)
        #expect(try !Self.stream(in: .halfClosedLocal).isRemoteClosed)
        #expect(try Self.stream(in: .closed).isClosed)
    }

    // MARK: Outbound queue

    func bytes(_ count: Int) -> ByteBuffer { ByteBuffer(repeating: 7, count: count) }

    @Test("queued DATA comes out in pieces of the window and the frame size, then the trailers")
    func queueSplits() {
        var queue = HTTP2OutboundQueue()
        queue.append(data: bytes(100), endStream: false)
        queue.append(headers: [1, 2], endStream: true)
        #expect(queue.dataBytes == 100)
        #expect(queue.endsStream)
        #expect(queue.next(window: 0, maxFrameSize: 16) == nil, "DATA waits for window")
        #expect(queue.next(window: 30, maxFrameSize: 16) == .data(bytes(16), endStream: false))
        #expect(queue.next(window: 10, maxFrameSize: 16) == .data(bytes(10), endStream: false))
        #expect(queue.dataBytes == 74)
        #expect(queue.next(window: 1000, maxFrameSize: 1000) == .data(bytes(74), endStream: false))
        #expect(queue.next(window: 0, maxFrameSize: 16) == .headers([1, 2], endStream: true), "no window needed")
        #expect(queue.isEmpty)
        #expect(queue.next(window: 1000, maxFrameSize: 1000) == nil)
    }

    @Test("DATA that ends the stream carries END_STREAM on its last piece only; an empty one needs no window")
    func queueEndStream() {
        var queue = HTTP2OutboundQueue()
        queue.append(data: bytes(20), endStream: true)
        #expect(queue.next(window: 15, maxFrameSize: 100) == .data(bytes(15), endStream: false))
        #expect(queue.next(window: 15, maxFrameSize: 100) == .data(bytes(5), endStream: true))
        queue.append(data: bytes(0), endStream: true)
        #expect(queue.next(window: 0, maxFrameSize: 100) == .data(bytes(0), endStream: true))
        #expect(queue.isEmpty && queue.dataBytes == 0)
    }

    @Test("thousands of small frames come out in order, appended while being taken")
    func queueMany() {
        var queue = HTTP2OutboundQueue()
        var taken: [UInt8] = []
        for round in 0..<10 {
            for value in 0..<500 {
                queue.append(data: ByteBuffer(bytes: [UInt8((round * 500 + value) % 251)]), endStream: false)
            }
            for _ in 0..<300 {
                guard case .data(let bytes, _) = queue.next(window: 100, maxFrameSize: 100) else { break }
                taken += bytes.readableBytesView
            }
        }
        while case .data(let bytes, _) = queue.next(window: 100, maxFrameSize: 100) { taken += bytes.readableBytesView }
        #expect(queue.isEmpty && queue.dataBytes == 0)
        #expect(taken == (0..<5000).map { UInt8($0 % 251) })
    }
}
