@_spi(Benchmarks) import HangarGRPC
import HangarRuntime
import NIOCore
import NIOEmbedded

/// The gRPC server's HTTP/2 connection (`HTTP2ServerConnection` and `GRPCConnectionHandler`, with Dapr's methods over
/// the in-memory runtime) on an EmbeddedChannel, fed bytes as a client's writes would arrive.
enum HTTP2Fuzz {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
    static let service = DaprService.make(runtime: FuzzRuntime.shared)

    /// Input: one byte for the size of the reads (0: one read), then what the client sends after the preface.
    static func run(_ input: ArraySlice<UInt8>) {
        var input = input
        let size = input.popFirst() ?? 0
        serve(preface + input, readSize: size)
    }

    /// Input: one byte of options (bit 0: the request ends with its headers; bit 1: the block is split into HEADERS
    /// and CONTINUATION; bit 2: the block is sent again on a second stream, against the first one's dynamic table),
    /// then the header block.
    static func runHeaderBlock(_ input: ArraySlice<UInt8>) {
        var input = input
        let options = input.popFirst() ?? 0
        let block = Array(input)
        let endStream = options & 1 != 0
        var frames = HTTP2Frames()
        frames.settings([])
        for stream: UInt32 in options & 4 != 0 ? [1, 3] : [1] {
            if options & 2 != 0 {
                let middle = block.count / 2
                frames.headers(stream, block[..<middle], endStream: endStream, endHeaders: false)
                frames.continuation(stream, block[middle...])
            } else {
                frames.headers(stream, block[...], endStream: endStream)
            }
            if !endStream { frames.data(stream, [0, 0, 0, 0, 0], endStream: true) }
        }
        serve(preface + frames.bytes, readSize: 0)
    }

    /// One connection: the bytes in reads of `readSize`, as long as the server keeps the connection open, then the
    /// client goes away. What the server writes is read and dropped.
    static func serve(_ bytes: [UInt8], readSize: UInt8) {
        let channel = EmbeddedChannel()
        do {
            try GRPCServer.configure(
                channel, service: service, identity: .app(FuzzRuntime.app), gate: FuzzRuntime.shared.gate,
                logger: FuzzRuntime.logger)
            try channel.connect(to: SocketAddress(unixDomainSocketPath: "/tmp/hangar-fuzz")).wait()
        } catch {
            fatalError("cannot set up the server connection: \(error)")
        }
        for chunk in chunked(bytes[...], size: readSize) {
            guard channel.isActive else { break }
            do {
                try channel.writeInbound(ByteBuffer(bytes: chunk))
            } catch {
                break  // the connection failed the read: what it does with a bad peer
            }
            channel.read()
            discardOutbound(channel)
        }
        channel.embeddedEventLoop.run()
        discardOutbound(channel)
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    static func discardOutbound(_ channel: EmbeddedChannel) {
        while let buffer = try? channel.readOutbound(as: ByteBuffer.self) {
            if FuzzTarget.verbose { describeFrames(buffer) }
        }
    }

    /// With HANGAR_FUZZ_VERBOSE set: the frames the server wrote (type, flags, stream, length; DATA payloads).
    static func describeFrames(_ buffer: ByteBuffer) {
        var buffer = buffer
        while let header = buffer.readBytes(length: 9) {
            let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
            let stream = header[5...8].reduce(0) { $0 << 8 | Int($1) } & 0x7FFF_FFFF
            let payload = buffer.readBytes(length: min(length, buffer.readableBytes)) ?? []
            let data =
                header[3] == 0
                ? " \(String(decoding: payload.map { $0 < 32 || $0 > 126 ? 46 : $0 }, as: UTF8.self))" : ""
            print("server frame type \(header[3]) flags \(header[4]) stream \(stream) length \(length)\(data)")
        }
    }
}

/// HTTP/2 frames as a client writes them (RFC 9113 §4.1), for the seeds and the header-block target.
struct HTTP2Frames {
    var bytes: [UInt8] = []

    mutating func frame(_ type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: some Collection<UInt8>) {
        let length = payload.count
        bytes += [UInt8(truncatingIfNeeded: length >> 16), UInt8(truncatingIfNeeded: length >> 8)]
        bytes += [UInt8(truncatingIfNeeded: length), type, flags]
        bytes += [UInt8(truncatingIfNeeded: stream >> 24) & 0x7F, UInt8(truncatingIfNeeded: stream >> 16)]
        bytes += [UInt8(truncatingIfNeeded: stream >> 8), UInt8(truncatingIfNeeded: stream)]
        bytes += payload
    }

    mutating func settings(_ values: [(UInt16, UInt32)], ack: Bool = false) {
        var payload: [UInt8] = []
        for (id, value) in values {
            payload += [UInt8(id >> 8), UInt8(id & 0xFF)]
            payload += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) }
        }
        frame(0x4, flags: ack ? 0x1 : 0, payload)
    }

    mutating func headers(_ stream: UInt32, _ block: ArraySlice<UInt8>, endStream: Bool, endHeaders: Bool = true) {
        frame(0x1, flags: (endStream ? 0x1 : 0) | (endHeaders ? 0x4 : 0), stream: stream, block)
    }

    mutating func continuation(_ stream: UInt32, _ block: ArraySlice<UInt8>, endHeaders: Bool = true) {
        frame(0x9, flags: endHeaders ? 0x4 : 0, stream: stream, block)
    }

    mutating func data(_ stream: UInt32, _ payload: some Collection<UInt8>, endStream: Bool) {
        frame(0x0, flags: endStream ? 0x1 : 0, stream: stream, payload)
    }
}
