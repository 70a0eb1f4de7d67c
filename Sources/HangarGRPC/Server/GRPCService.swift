public import HangarComponents
public import HangarRuntime
public import NIOCore
package import NIOHPACK
public import SwiftProtobuf

/// What a handler knows about the call it serves.
@_spi(Benchmarks) public struct GRPCCallContext: Sendable {
    /// Who is calling, established by the gate.
    @_spi(Benchmarks) public let caller: Caller
    package let headers: HPACKHeaders
    @_spi(Benchmarks) public let eventLoop: any EventLoop
}

/// The methods a gRPC server answers, by path (`/package.Service/Method`): unary, server-streaming and
/// bidirectional-streaming (client streaming is bidirectional with one response).
///
/// `@_spi(Benchmarks)`: the benchmark package's echo server registers its one method here; not an API.
@_spi(Benchmarks) public struct GRPCService: Sendable {
    /// A unary method: one request message in, one response message (framed) out, at once when the method does
    /// not block, else later on the call's event loop.
    package typealias UnaryHandler = @Sendable (ByteBuffer, GRPCCallContext) -> Eventual<ByteBuffer>

    /// A streaming method: handed its call once the request's headers are admitted, it sets the call's callbacks
    /// and works with it on the call's event loop.
    package typealias StreamHandler = @Sendable (GRPCStreamCall) -> Void

    /// A unary method whose answer also carries response headers (initial metadata), sent before its message or
    /// its error status. Only `InvokeService` needs it (it relays the invoked app's headers); every other unary
    /// method's answer stays a bare buffer.
    package typealias UnaryWithHeadersHandler = @Sendable (ByteBuffer, GRPCCallContext) -> Eventual<GRPCUnaryAnswer>

    package enum Method: Sendable {
        case unary(UnaryHandler)
        case unaryWithHeaders(UnaryWithHeadersHandler)
        case streaming(StreamHandler)
    }

    /// A method and its short name (`GetState`), which metrics and logs use.
    package struct Registered: Sendable {
        package let name: String
        package let method: Method
    }

    package private(set) var methods: [String: Registered] = [:]

    /// What answers any call (every shape is a stream) to a method that is not registered when its request names a
    /// target app in `dapr-app-id` (gRPC proxying); nil when the service proxies nothing.
    package var proxy: Registered?

    /// The method for `path`: a registered one, else the proxy when the call names a target app (`headers` are
    /// only read then, off the path of registered methods).
    package func method(_ path: String, headers: HPACKHeaders) -> Registered? {
        if let registered = methods[path] { return registered }
        guard let proxy, headers.first(name: "dapr-app-id") != nil else { return nil }
        return proxy
    }

    @_spi(Benchmarks) public init() {}

    /// Registers a unary method with typed messages: decoding, encoding and framing happen here.
    @_spi(Benchmarks) public mutating func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request.Type = Request.self,
        _ handler: @escaping @Sendable (Request, GRPCCallContext) -> Eventual<Response>
    ) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        methods[path] = Registered(name: name, method: .unary { bytes, context in
            let request: Request
            do {
                request = try bytes.withUnsafeReadableBytes { try Request(serializedBytes: $0.bytes) }
            } catch {
                return .failure(GRPCStatus(error))
            }
            return handler(request, context).flatMapThrowing { response in
                try Self.frame(response)
            }
        })
    }

    /// Registers a unary method with typed messages whose answer carries response headers, even when it fails.
    package mutating func unaryWithHeaders<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request.Type = Request.self,
        _ handler: @escaping @Sendable (Request, GRPCCallContext) -> Eventual<GRPCUnaryReply<Response>>
    ) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        methods[path] = Registered(name: name, method: .unaryWithHeaders { bytes, context in
            let request: Request
            do {
                request = try bytes.withUnsafeReadableBytes { try Request(serializedBytes: $0.bytes) }
            } catch {
                return .failure(GRPCStatus(error))
            }
            return handler(request, context).map { reply in
                GRPCUnaryAnswer(
                    headers: reply.headers,
                    outcome: reply.result.flatMap { response in
                        Result { try Self.frame(response) }
                    }.mapError { GRPCStatus($0) })
            }
        })
    }

    /// Registers a server-streaming method: one request message, then the responses the handler sends on the call
    /// until it finishes it. (`@_spi(Benchmarks)`: the benchmark package's echo server streams through it.)
    @_spi(Benchmarks) public mutating func serverStreaming<Request: SwiftProtobuf.Message>(
        _ path: String, _ request: Request.Type = Request.self,
        _ handler: @escaping @Sendable (Request, GRPCStreamCall) -> Void
    ) {
        bidirectionalStreaming(path) { call in
            var request: Request?
            call.onMessage = { [unowned call] bytes in
                guard request == nil else {
                    return call.finish(
                        GRPCStatus(code: .internal, message: "server-streaming method received more than one message"))
                }
                do {
                    request = try bytes.withUnsafeReadableBytes { try Request(serializedBytes: $0.bytes) }
                } catch {
                    call.finish(GRPCStatus(error))
                }
            }
            call.onEnd = { [unowned call] in
                guard let request else {
                    return call.finish(
                        GRPCStatus(code: .internal, message: "the request ended without a complete message"))
                }
                call.onMessage = { _ in }
                handler(request, call)
            }
        }
    }

    /// Registers a bidirectional-streaming (or client-streaming) method: it sees every request message as it
    /// arrives and sends responses when it likes.
    package mutating func bidirectionalStreaming(_ path: String, _ handler: @escaping StreamHandler) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        methods[path] = Registered(name: name, method: .streaming(handler))
    }

    /// One length-prefixed, uncompressed gRPC message, encoded straight into the buffer that is written.
    package static func frame(_ message: some SwiftProtobuf.Message) throws
        -> ByteBuffer
    {
        let framed: GRPCFramedBytes = try message.serializedBytes()
        return framed.buffer
    }
}

/// What a `unaryWithHeaders` method answers: response headers, and its response or its error.
package struct GRPCUnaryReply<Response: SwiftProtobuf.Message>: Sendable {
    package var headers: [(name: String, value: String)]
    package var result: Result<Response, any Error>

    package init(headers: [(name: String, value: String)], result: Result<Response, any Error>) {
        self.headers = headers
        self.result = result
    }
}

/// A `GRPCUnaryReply` encoded: its headers, and its framed message or its status.
package struct GRPCUnaryAnswer: Sendable {
    package var headers: [(name: String, value: String)]
    package var outcome: Result<ByteBuffer, GRPCStatus>
}

/// A buffer holding the 5-byte gRPC message prefix followed by the message: swift-protobuf sizes the message,
/// creates this with that many bytes after the prefix and encodes into them, so a response is encoded once,
/// into the buffer that goes on the wire.
struct GRPCFramedBytes: SwiftProtobufContiguousBytes {
    private static let allocator = ByteBufferAllocator()
    private(set) var buffer: ByteBuffer

    init(repeating byte: UInt8, count: Int) {
        buffer = Self.allocator.buffer(capacity: count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(truncatingIfNeeded: count))
        buffer.writeRepeatingByte(byte, count: count)
    }

    init<S: Sequence>(_ sequence: S) where S.Element == UInt8 {
        buffer = Self.allocator.buffer(capacity: sequence.underestimatedCount + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(0))
        let count = buffer.writeBytes(sequence)
        buffer.setInteger(UInt32(truncatingIfNeeded: count), at: buffer.readerIndex + 1)
    }

    var count: Int { buffer.readableBytes - 5 }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeReadableBytes { try body(UnsafeRawBufferPointer(rebasing: $0[5...])) }
    }

    mutating func withUnsafeMutableBytes<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try buffer.withUnsafeMutableReadableBytes { try body(UnsafeMutableRawBufferPointer(rebasing: $0[5...])) }
    }
}
