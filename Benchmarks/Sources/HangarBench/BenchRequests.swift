import Foundation
import NIOCore
import NIOHPACK
import SwiftProtobuf

/// The calls the bench makes, encoded once up front as length-prefixed gRPC messages.
enum BenchRequests {
    static let getStatePath = "/dapr.proto.runtime.v1.Dapr/GetState"
    static let saveStatePath = "/dapr.proto.runtime.v1.Dapr/SaveState"
    static let echoPath = "/hangar.bench.v1.Echo/Echo"
    /// What hangard calls on an app's gRPC server for service invocation (the echo server answers it too).
    static let onInvokePath = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
    static let invokeServicePath = "/dapr.proto.runtime.v1.Dapr/InvokeService"
    /// The echo server's server-streaming method (the `stream` scenario), called directly and, proxied by hangard,
    /// as the app `callee`.
    static let streamPath = "/hangar.bench.v1.Echo/Stream"
    /// The method the `invoke` scenario calls on the callee.
    static let invokeMethod = "echo"
    static let invokeContentType = "application/octet-stream"

    /// The key caller `caller` uses as its `index`-th key.
    static func key(caller: Int, index: Int) -> String { "k\(caller)-\(index)" }

    /// A value of `bytes` bytes.
    static func value(bytes: Int) -> Data {
        Data((0..<bytes).map { UInt8(ascii: "a") + UInt8($0 % 26) })
    }

    static func getState(store: String, key: String) throws -> ByteBuffer {
        var request = Dapr_Proto_Runtime_V1_GetStateRequest()
        request.storeName = store
        request.key = key
        return try frame(request)
    }

    static func saveState(store: String, keys: [String], value: Data) throws -> ByteBuffer {
        var request = Dapr_Proto_Runtime_V1_SaveStateRequest()
        request.storeName = store
        request.states = keys.map { key in
            var item = Dapr_Proto_Common_V1_StateItem()
            item.key = key
            item.value = value
            return item
        }
        return try frame(request)
    }

    static func echo(payload: Data) throws -> ByteBuffer {
        var request = Hangar_Bench_V1_EchoRequest()
        request.payload = payload
        return try frame(request)
    }

    /// A `StreamRequest`: `count` messages (0: until cancelled) of `payloadBytes` bytes each.
    static func streamRequest(count: Int, payloadBytes: Int) throws -> ByteBuffer {
        var request = Hangar_Bench_V1_StreamRequest()
        request.count = UInt64(count)
        request.payloadBytes = UInt32(payloadBytes)
        return try frame(request)
    }

    /// Message 0 of a stream, framed: an `EchoResponse` whose `payloadBytes`-byte payload starts with the message's
    /// index (big-endian, 8 bytes) and goes on with `value(bytes:)`'s letters. The payload is the buffer's last
    /// `payloadBytes` bytes, so the index of message `n` is written at `readableBytes - payloadBytes`.
    static func streamedMessage(payloadBytes: Int) throws -> ByteBuffer {
        var response = Hangar_Bench_V1_EchoResponse()
        response.payload = Data(count: 8) + value(bytes: payloadBytes - 8)
        return try frame(response)
    }

    /// The request HEADERS of a call to `path` that hangard proxies to app `target` (gRPC proxying: a method it
    /// does not serve, with `dapr-app-id`).
    static func proxiedHeaders(path: String, target: String) -> HPACKHeaders {
        var headers = GRPCClientHandler.requestHeaders(path: path)
        headers.add(name: "dapr-app-id", value: target)
        return headers
    }

    /// The `InvokeRequest` an app's `OnInvoke` receives: the method and `payload` as the data (an `Any` without a
    /// type URL, as the SDKs send raw bytes).
    static func invokeRequest(payload: Data) -> Dapr_Proto_Common_V1_InvokeRequest {
        var request = Dapr_Proto_Common_V1_InvokeRequest()
        request.method = invokeMethod
        request.data.value = payload
        request.contentType = invokeContentType
        return request
    }

    /// A direct call of the echo server's `OnInvoke`, as hangard makes it.
    static func onInvoke(payload: Data) throws -> ByteBuffer {
        try frame(invokeRequest(payload: payload))
    }

    /// `InvokeService` of `payload` on app `id` (its `echo` method), as an app calls it on its own socket.
    static func invokeService(id: String, payload: Data) throws -> ByteBuffer {
        var request = Dapr_Proto_Runtime_V1_InvokeServiceRequest()
        request.id = id
        request.message = invokeRequest(payload: payload)
        return try frame(request)
    }

    /// One length-prefixed, uncompressed gRPC message.
    static func frame(_ message: some SwiftProtobuf.Message) throws -> ByteBuffer {
        let bytes: [UInt8] = try message.serializedBytes()
        var buffer = ByteBuffer()
        buffer.reserveCapacity(5 + bytes.count)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt32(bytes.count))
        buffer.writeBytes(bytes)
        return buffer
    }

    /// The data a GetState response carries.
    static func decodeGetState(_ response: ByteBuffer) throws -> Data {
        try Dapr_Proto_Runtime_V1_GetStateResponse(serializedBytes: Array(response.readableBytesView)).data
    }

    /// The data an `InvokeResponse` carries (the answer of `OnInvoke` and of `InvokeService`).
    static func decodeInvokeResponse(_ response: ByteBuffer) throws -> Data {
        try Dapr_Proto_Common_V1_InvokeResponse(serializedBytes: Array(response.readableBytesView)).data.value
    }

    /// The payload an echo response carries.
    static func decodeEcho(_ response: ByteBuffer) throws -> Data {
        try Hangar_Bench_V1_EchoResponse(serializedBytes: Array(response.readableBytesView)).payload
    }
}
