package import HangarRuntime
package import NIOCore
package import NIOHPACK
package import SwiftProtobuf

/// What a handler knows about the call it serves.
package struct GRPCCallContext: Sendable {
    /// Who is calling, established by the gate.
    package let caller: Caller
    package let headers: HPACKHeaders
    package let eventLoop: any EventLoop
    package let allocator: ByteBufferAllocator
}

/// The methods a gRPC server answers, by path (`/package.Service/Method`). Unary methods today; the table is where
/// server- and bidirectional-streaming kinds join it.
package struct GRPCService: Sendable {
    /// A unary method: one request message in, one response message (framed) out.
    package typealias UnaryHandler = @Sendable (ByteBuffer, GRPCCallContext) -> EventLoopFuture<ByteBuffer>

    package enum Method: Sendable {
        case unary(UnaryHandler)
    }

    /// A method and its short name (`GetState`), which metrics and logs use.
    package struct Registered: Sendable {
        package let name: String
        package let method: Method
    }

    package private(set) var methods: [String: Registered] = [:]

    package init() {}

    /// Registers a unary method with typed messages: decoding, encoding and framing happen here.
    package mutating func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request.Type = Request.self,
        _ handler: @escaping @Sendable (Request, GRPCCallContext) -> EventLoopFuture<Response>
    ) {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        methods[path] = Registered(name: name, method: .unary { bytes, context in
            let request: Request
            do {
                request = try Request(serializedBytes: Array(bytes.readableBytesView))
            } catch {
                return context.eventLoop.makeFailedFuture(GRPCStatus(error))
            }
            return handler(request, context).flatMapThrowing { response in
                try Self.frame(response, allocator: context.allocator)
            }
        })
    }

    /// One length-prefixed, uncompressed gRPC message.
    package static func frame(_ message: some SwiftProtobuf.Message, allocator: ByteBufferAllocator) throws
        -> ByteBuffer
    {
        let bytes: [UInt8] = try message.serializedBytes()
        var buffer = allocator.buffer(capacity: bytes.count + 5)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }
}
