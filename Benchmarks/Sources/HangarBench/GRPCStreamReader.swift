import NIOCore
import NIOHPACK

/// What reads one stream a `GRPCClientHandler` carries beside its unary calls: a server stream of the echo server
/// (`GRPCStreamConsumer`) or a bidirectional one such as a streaming subscription (`GRPCSubscriber`). The handler
/// hands it every HEADERS and DATA frame of its stream and tells it when the stream or the connection ends; the
/// reader returns what it consumed to the stream's window (`GRPCClientHandler.windowUpdate`) itself, so that its
/// pace is the server's view of the client reading. Used on the connection's event loop only.
protocol GRPCStreamReader: AnyObject {
    /// The response HEADERS, or the trailers when `endStream`.
    func received(headers: HPACKHeaders, endStream: Bool)
    /// A DATA frame: `data` its bytes, `size` what it takes from the windows (padding included).
    func received(data: inout ByteBuffer, size: Int, endStream: Bool)
    /// The connection closed or the stream was reset before its trailers.
    func failed(_ why: String)
}
