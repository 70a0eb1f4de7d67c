import NIOCore

/// What one stream has to send that its flow-control windows did not let out yet: DATA and the header block
/// that follows it (trailers), in order. Pure: it hands out the next frame for the window the caller has, and the
/// caller writes it. A stream whose answer fits its windows never uses one (the unary path writes directly).
struct HTTP2OutboundQueue {
    /// One frame to write, or the rest of one DATA payload.
    enum Frame: Equatable {
        case data(ByteBuffer, endStream: Bool)
        case headers([UInt8], endStream: Bool)
    }

    /// Frames from `head` on are queued: taking one is O(1) even when a stream has queued thousands of small
    /// messages, and an empty queue allocates nothing (the unary path creates one per stream).
    private var items: [Frame] = []
    private var head = 0
    /// DATA bytes queued: what the per-stream writability limit is measured against.
    private(set) var dataBytes = 0

    var isEmpty: Bool { head == items.count }

    /// Whether the queue holds the frame that ends the stream.
    var endsStream: Bool {
        guard !isEmpty else { return false }
        switch items[items.count - 1] {
        case .data(_, let endStream), .headers(_, let endStream): return endStream
        }
    }

    mutating func append(data: ByteBuffer, endStream: Bool) {
        dataBytes += data.readableBytes
        items.append(.data(data, endStream: endStream))
    }

    mutating func append(headers: [UInt8], endStream: Bool) {
        items.append(.headers(headers, endStream: endStream))
    }

    /// Takes the next frame: a header block whatever the window, or up to `min(window, maxFrameSize)` bytes of
    /// DATA (an empty DATA frame that ends the stream needs no window). Nil when empty or when DATA waits for window.
    mutating func next(window: Int, maxFrameSize: Int) -> Frame? {
        guard !isEmpty else { return nil }
        let first = items[head]
        switch first {
        case .headers:
            removeFirst()
            return first
        case .data(var bytes, let endStream):
            let length = min(bytes.readableBytes, window, maxFrameSize)
            if length <= 0 && bytes.readableBytes > 0 { return nil }
            let chunk = bytes.readSlice(length: max(length, 0))!
            dataBytes -= chunk.readableBytes
            if bytes.readableBytes == 0 {
                removeFirst()
                return .data(chunk, endStream: endStream)
            }
            items[head] = .data(bytes, endStream: endStream)
            return .data(chunk, endStream: false)
        }
    }

    private mutating func removeFirst() {
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
    }
}
