import Foundation
import HangarComponents
import HangarRuntime
import NIOCore
import SwiftProtobuf

extension DaprService {
    /// `InvokeService` (deprecated upstream in favour of proxying, still what the SDK's gRPC invocation sends): the
    /// runtime's `InvocationAPI` calls the target over its app channel; the caller's metadata is forwarded as Dapr
    /// forwards it. The callee's response headers come back as the call's response headers; from an HTTP callee
    /// with `dapr-http-status: <status>`, and an answer outside 2xx is the gRPC error Dapr maps it to (the headers
    /// still go out first, as Dapr sends them).
    /// A unary call is one message each way, so both are buffered: the request is at most the caller's
    /// `maxRequestBytes` (the deframer refuses more with RESOURCE_EXHAUSTED), and the app's answer at most the node's
    /// `--max-request-bytes` (more fails the call with RESOURCE_EXHAUSTED / ERR_DIRECT_INVOKE, and the app's stream
    /// or connection is cut rather than read on).
    static func registerInvoke(_ service: inout GRPCService, _ invocation: InvocationAPI) {
        service.unaryWithHeaders(prefix + "InvokeService", Dapr_Proto_Runtime_V1_InvokeServiceRequest.self) {
            request, call in
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
                call.caller, target: request.id, invoked, headers: headers, deadline: deadline, on: call.eventLoop
            ).map { result in
                var response = Dapr_Proto_Common_V1_InvokeResponse()
                response.data.typeURL = result.dataTypeURL
                response.data.value = Data(result.data.readableBytesView)
                response.contentType = result.contentType
                guard let status = result.httpStatus else {
                    return GRPCUnaryReply(headers: result.metadata, result: .success(response))
                }
                let headers = httpResponseHeaders(result, status: status)
                if !(200..<300).contains(status) {
                    return GRPCUnaryReply(
                        headers: headers, result: .failure(InvocationError.httpStatus(status, body: result.data)))
                }
                return GRPCUnaryReply(headers: headers, result: .success(response))
            }
        }
    }

    /// An HTTP callee's response headers as a gRPC caller's response metadata, as Dapr converts them: permanent
    /// HTTP headers become `dapr-<name>` (`dapr-content-type`, `dapr-date`, ...), then `dapr-http-status`.
    static func httpResponseHeaders(_ result: AppInvocationResult, status: Int) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        if !result.contentType.isEmpty { headers.append(("dapr-content-type", result.contentType)) }
        for (name, value) in result.metadata where !name.hasSuffix("-bin") {
            headers.append((InvocationAPI.permanentHTTPHeaders.contains(name) ? "dapr-" + name : name, value))
        }
        headers.append(("dapr-http-status", String(status)))
        return headers
    }

    /// gRPC proxying: a call to a method hangard does not serve, with `dapr-app-id: <target>`, is relayed to the
    /// target app's gRPC server as a stream (`GRPCProxyRelay`). The path does not say whether a method is unary or
    /// streaming, so every proxied call is a bidirectional stream, as in Dapr: it counts against the caller's
    /// `maxStreams`, its messages go to the app as they arrive, and the app's answer comes back as it comes.
    static func registerProxy(_ service: inout GRPCService, _ invocation: InvocationAPI) {
        service.proxy = GRPCService.Registered(
            name: "Proxy", method: .streaming { call in GRPCProxyRelay.start(call, invocation) })
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
