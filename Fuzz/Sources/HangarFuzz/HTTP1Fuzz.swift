import HangarHTTP
import HangarRuntime
import NIOCore
import NIOEmbedded

/// The HTTP/1.1 server (`HTTPServer.configure`: NIOHTTP1's codec, `HTTPConnectionHandler`, the router and Dapr's
/// routes over the in-memory runtime) on an EmbeddedChannel, fed bytes as a client's writes would arrive.
enum HTTP1Fuzz {
    /// Input: one byte for the size of the reads (0: one read), then what the client sends.
    static func run(_ input: ArraySlice<UInt8>) {
        var input = input
        let size = input.popFirst() ?? 0
        _ = serve(input, readSize: size)
    }

    /// The state routes whose bodies `stateJSON` fuzzes.
    static let stateRoutes = [
        "POST /v1.0/state/statestore", "PUT /v1.0/state/statestore/bulk", "POST /v1.0/state/statestore/transaction",
    ]

    /// Input: one byte choosing the route (`stateRoutes`), then the body. A well-formed request always gets a
    /// response, and a body, however wrong, is never answered with a server error (5xx).
    static func runStateBody(_ input: ArraySlice<UInt8>) {
        var input = input
        let route = stateRoutes[Int(input.popFirst() ?? 0) % stateRoutes.count]
        let head =
            "\(route) HTTP/1.1\r\nhost: h\r\ncontent-type: application/json\r\ncontent-length: \(input.count)\r\n\r\n"
        let response = serve(Array(head.utf8) + input, readSize: 0)
        let status = response.prefix(12)
        precondition(status.starts(with: "HTTP/1.1 ".utf8), "no response to \(route)")
        precondition(
            !status.dropFirst(9).starts(with: "5".utf8), "\(route) answered \(String(decoding: status, as: UTF8.self))")
    }

    /// One connection: the bytes in reads of `readSize` while the server keeps the connection open, then the client
    /// goes away. Returns what the server wrote.
    static func serve(_ bytes: some Collection<UInt8>, readSize: UInt8) -> [UInt8] {
        let channel = EmbeddedChannel()
        do {
            try HTTPServer.configure(channel, runtime: FuzzRuntime.shared, listener: .app(FuzzRuntime.app))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        } catch {
            fatalError("cannot set up the server connection: \(error)")
        }
        var written: [UInt8] = []
        for chunk in chunked(ArraySlice(bytes), size: readSize) {
            guard channel.isActive else { break }
            do {
                try channel.writeInbound(ByteBuffer(bytes: chunk))
            } catch {
                break  // the connection failed the read: what it does with a bad peer
            }
            channel.read()
            collect(channel, into: &written)
        }
        channel.embeddedEventLoop.run()
        collect(channel, into: &written)
        _ = try? channel.finish(acceptAlreadyClosed: true)
        if FuzzTarget.verbose { print(String(decoding: written, as: UTF8.self)) }
        return written
    }

    static func collect(_ channel: EmbeddedChannel, into written: inout [UInt8]) {
        while let buffer = try? channel.readOutbound(as: ByteBuffer.self) { written += buffer.readableBytesView }
    }
}
