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

    private var items: [Frame] = []
    /// DATA bytes queued: what the per-stream writability limit is measured against.
    private(set) var dataBytes = 0

    var isEmpty: Bool { items.isEmpty }

    /// Whether the queue holds the frame that ends the stream.
    var endsStream: Bool {
        switch items.last {
        case .data(_, let endStream), .headers(_, let endStream): endStream
        case nil: false
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
        guard let first = items.first else { return nil }
        switch first {
        case .headers:
            items.removeFirst()
            return first
        case .data(var bytes, let endStream):
            let length = min(bytes.readableBytes, window, maxFrameSize)
            if length <= 0 && bytes.readableBytes > 0 { return nil }
            let chunk = bytes.readSlice(length: max(length, 0))!
            dataBytes -= chunk.readableBytes
            if bytes.readableBytes == 0 {
                items.removeFirst()
                return .data(chunk, endStream: endStream)
            }
            items[0] = .data(bytes, endStream: endStream)
            return .data(chunk, endStream: false)
        }
    }
}
