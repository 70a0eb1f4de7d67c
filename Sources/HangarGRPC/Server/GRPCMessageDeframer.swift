package import NIOCore

/// Incremental reader of gRPC's length-prefixed messages (1 byte compressed flag, 4 bytes big-endian length).
/// Refuses a message over the limit as soon as its prefix arrives, before buffering its body.
package struct GRPCMessageDeframer {
    package enum Failure: Error {
        case tooLarge(Int)
        case compressed
    }

    package let maxMessageBytes: Int
    /// Messages keep their 5-byte prefix (a relay forwards them as they came).
    package var keepsPrefix = false
    private var buffer: ByteBuffer?

    package init(maxMessageBytes: Int) {
        self.maxMessageBytes = maxMessageBytes
    }

    /// Adds bytes; returns every message now complete.
    package mutating func append(_ bytes: ByteBuffer) throws(Failure) -> [ByteBuffer] {
        if buffer == nil {
            buffer = bytes
        } else {
            var incoming = bytes
            buffer!.writeBuffer(&incoming)
        }
        var messages: [ByteBuffer] = []
        while let message = try next() { messages.append(message) }
        if buffer?.readableBytes == 0 { buffer = nil }
        return messages
    }

    /// Whether a partial message is buffered.
    package var hasPartialMessage: Bool { (buffer?.readableBytes ?? 0) > 0 }

    /// The memory the partial message holds: its buffer's whole storage (which NIO sizes in powers of two, and
    /// which may be the read buffer it arrived in), not only its bytes.
    var bufferedBytes: Int { buffer?.storageCapacity ?? 0 }

    private mutating func next() throws(Failure) -> ByteBuffer? {
        guard var view = buffer, view.readableBytes >= 5,
            let flag = view.readInteger(as: UInt8.self), let length = view.readInteger(as: UInt32.self)
        else { return nil }
        if flag != 0 { throw .compressed }
        if Int(length) > maxMessageBytes { throw .tooLarge(Int(length)) }
        guard view.readableBytes >= Int(length) else { return nil }
        if keepsPrefix { return buffer!.readSlice(length: 5 + Int(length)) }
        let message = view.readSlice(length: Int(length))
        buffer = view
        return message
    }
}
