import Foundation
package import HangarRuntime
import NIOHPACK
import SwiftProtobuf

/// A gRPC status as written in trailers: code, message, and the `google.rpc.Status` details.
package struct GRPCStatus: Error, Sendable {
    package var code: RPCCode
    package var message: String
    /// `ErrorInfo` for the `grpc-status-details-bin` trailer, when the error has one.
    package var errorInfo: (reason: String, metadata: [String: String])?

    package init(code: RPCCode, message: String, errorInfo: (reason: String, metadata: [String: String])? = nil) {
        self.code = code
        self.message = message
        self.errorInfo = errorInfo
    }

    /// The status for any error a handler produced: runtime errors keep their code and reason.
    package init(_ error: any Error) {
        switch error {
        case let status as GRPCStatus:
            self = status
        case let callee as AppCalleeError:
            // An invoked app's own status reaches the caller as the app sent it, as Dapr relays it.
            self.init(code: callee.rpcCode, message: callee.message)
        case let error as any DaprAPIError:
            // An error without a Dapr code (an HTTP callee's status) has only its own metadata, as in Dapr.
            var metadata = error.errorMetadata
            if !error.errorCode.isEmpty { metadata["errorCode"] = metadata["errorCode"] ?? error.errorCode }
            self.init(code: error.rpcCode, message: error.message, errorInfo: (error.reason, metadata))
        case is BinaryDecodingError:
            self.init(code: .invalidArgument, message: "the request message is not valid protobuf: \(error)")
        default:
            self.init(code: .internal, message: "internal error: \(error)")
        }
    }

    /// What the trailers are made of, to reuse them for an identical status (a flood of one refusal).
    package struct Key: Hashable, Sendable {
        let code: RPCCode
        let message: String
        let reason: String?
        let metadata: [String: String]?
    }

    package var key: Key { Key(code: code, message: message, reason: errorInfo?.reason, metadata: errorInfo?.metadata) }

    /// Trailer fields: `grpc-status`, `grpc-message`, `grpc-status-details-bin`.
    func addTrailers(to headers: inout HPACKHeaders) {
        headers.add(name: "grpc-status", value: String(code.rawValue))
        if !message.isEmpty { headers.add(name: "grpc-message", value: Self.percentEncode(message)) }
        if let errorInfo {
            var info = Google_Rpc_ErrorInfo()
            info.reason = errorInfo.reason
            info.domain = "dapr.io"
            info.metadata = errorInfo.metadata
            var status = Google_Rpc_Status()
            status.code = Int32(code.rawValue)
            status.message = message
            if let any = try? Google_Protobuf_Any(message: info) { status.details = [any] }
            if let bytes: Data = try? status.serializedBytes() {
                headers.add(name: "grpc-status-details-bin", value: bytes.base64EncodedString())
            }
        }
    }

    /// gRPC's percent-encoding of `grpc-message`: bytes outside 0x20–0x7E, and '%', are escaped.
    static func percentEncode(_ message: String) -> String {
        var out = ""
        out.reserveCapacity(message.utf8.count)
        for byte in message.utf8 {
            if byte >= 0x20 && byte <= 0x7E && byte != 0x25 {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return out
    }
}
