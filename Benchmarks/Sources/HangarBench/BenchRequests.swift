import Foundation
import NIOCore
import SwiftProtobuf

/// The calls the bench makes, encoded once up front as length-prefixed gRPC messages.
enum BenchRequests {
    static let getStatePath = "/dapr.proto.runtime.v1.Dapr/GetState"
    static let saveStatePath = "/dapr.proto.runtime.v1.Dapr/SaveState"
    static let echoPath = "/hangar.bench.v1.Echo/Echo"
    /// What hangard calls on an app's gRPC server for service invocation (the echo server answers it too).
    static let onInvokePath = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
    static let invokeServicePath = "/dapr.proto.runtime.v1.Dapr/InvokeService"
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
