import Foundation
import HangarRuntime
import NIOCore
import NIOHTTP1

/// JSON in and out of the Dapr HTTP API's routes.
enum DaprHTTPJSON {
    static let noContent = HTTPResponse(status: .noContent)

    /// A request body as JSON, or Dapr's malformed-request error.
    static func parse(_ body: ByteBuffer) throws(APIError) -> Any {
        do {
            return try JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed])
        } catch {
            throw RequestError.malformed("the request body is not valid JSON")
        }
    }

    /// A stored value as JSON: embedded as-is when it is JSON, else as a string.
    static func value(_ data: Data) -> Any {
        if let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) { return value }
        return String(decoding: data, as: UTF8.self)
    }

    /// A 200 response with `object` as its JSON body.
    static func response(_ object: Any) throws -> HTTPResponse {
        let data = try JSONSerialization.data(
            withJSONObject: object, options: [.fragmentsAllowed, .withoutEscapingSlashes])
        return HTTPResponse(
            status: .ok, headers: ["content-type": "application/json"], body: ByteBuffer(bytes: data))
    }
}
