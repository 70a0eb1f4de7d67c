import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import SwiftProtobuf

extension DaprService {
    /// `InvokeService` (deprecated upstream in favour of proxying, still what the SDK's gRPC invocation sends): the
    /// runtime's `InvocationAPI` calls the target over its app channel; the caller's metadata is forwarded as Dapr
    /// forwards it. A unary call is one message each way, so both are buffered: the request is at most the caller's
    /// `maxRequestBytes` (the deframer refuses more with RESOURCE_EXHAUSTED), and the app's answer at most the node's
    /// `--max-request-bytes` (more fails the call with RESOURCE_EXHAUSTED / ERR_DIRECT_INVOKE, and the app's stream
    /// or connection is cut rather than read on).
    static func registerInvoke(_ service: inout GRPCService, _ invocation: InvocationAPI) {
        service.unary(prefix + "InvokeService", Dapr_Proto_Runtime_V1_InvokeServiceRequest.self) { request, call in
            let message = request.message
            var invoked = AppInvocation(
                method: message.method, data: ByteBuffer(bytes: message.data.value),
                dataTypeURL: message.data.typeURL, contentType: message.contentType)
            if message.hasHTTPExtension, message.httpExtension.verb != .none {
                invoked.verb = verbName(message.httpExtension.verb)
                invoked.query = message.httpExtension.querystring
            }
            let headers = call.headers.map { (name: $0.name, value: $0.value) }
            // The caller's own deadline bounds the call into the app too (else the runtime's default applies).
            let deadline = call.headers.first(name: "grpc-timeout").flatMap(GRPCConnectionHandler.parseTimeout)
                .map { NIODeadline.now() + $0 }
            return invocation.invoke(
                call.caller, target: request.id, invoked, headers: headers, deadline: deadline, on: call.eventLoop)
                .flatMapThrowing { result in
                    // An HTTP callee's answer outside 2xx is an error for a gRPC caller, as in Dapr.
                    if let status = result.httpStatus, !(200..<300).contains(status) {
                        throw InvocationError.httpStatus(status, body: result.data)
                    }
                    var response = Dapr_Proto_Common_V1_InvokeResponse()
                    response.data.typeURL = result.dataTypeURL
                    response.data.value = Data(result.data.readableBytesView)
                    response.contentType = result.contentType
                    return response
                }
        }
    }

    /// gRPC proxying: a unary call to a method hangard does not serve, with `dapr-app-id: <target>`, is forwarded
    /// to the target app's gRPC server undecoded. (Streaming calls are not proxied yet: they are UNIMPLEMENTED.)
    static func registerProxy(_ service: inout GRPCService, _ invocation: InvocationAPI) {
        service.proxy = GRPCService.Registered(
            name: "Proxy",
            method: .unary { message, call in
                let headers = call.headers.map { (name: $0.name, value: $0.value) }
                let deadline = call.headers.first(name: "grpc-timeout").flatMap(GRPCConnectionHandler.parseTimeout)
                    .map { NIODeadline.now() + $0 }
                return invocation.proxy(
                    call.caller, path: call.headers.first(name: ":path") ?? "", message: message, headers: headers,
                    deadline: deadline, on: call.eventLoop
                ).map { response in
                    var framed = ByteBuffer()
                    framed.reserveCapacity(5 + response.readableBytes)
                    framed.writeInteger(UInt8(0))
                    framed.writeInteger(UInt32(response.readableBytes))
                    framed.writeImmutableBuffer(response)
                    return framed
                }
            })
    }

    static func verbName(_ verb: Dapr_Proto_Common_V1_HTTPExtension.Verb) -> String? {
        switch verb {
        case .get: "GET"
        case .head: "HEAD"
        case .post: "POST"
        case .put: "PUT"
        case .delete: "DELETE"
        case .connect: "CONNECT"
        case .options: "OPTIONS"
        case .trace: "TRACE"
        case .patch: "PATCH"
        default: nil
        }
    }
}
