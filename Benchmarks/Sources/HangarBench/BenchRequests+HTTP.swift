import Foundation

/// The calls the HTTP scenarios make, on Dapr's HTTP API, encoded once up front.
extension BenchRequests {
    /// The key caller `caller` uses as its `index`-th key over HTTP: apart from the gRPC scenarios' keys, whose
    /// SaveState stores the value as raw bytes where HTTP stores it as JSON.
    static func httpKey(caller: Int, index: Int) -> String { "h\(caller)-\(index)" }

    /// `GET /v1.0/state/<store>/<key>`: 200 with the value as stored by `httpSaveState`, the JSON string.
    static func httpGetState(store: String, key: String, value: Data) -> HTTPClientRequest {
        HTTPClientRequest(
            method: "GET", path: "/v1.0/state/\(store)/\(key)", expectedStatus: 200,
            expectedBody: jsonString(value))
    }

    /// `POST /v1.0/state/<store>` of `[{"key": …, "value": "<value>"}, …]`: 204.
    static func httpSaveState(store: String, keys: [String], value: Data) -> HTTPClientRequest {
        let items = keys.map { "{\"key\":\"\($0)\",\"value\":\(jsonString(value))}" }
        return HTTPClientRequest(
            method: "POST", path: "/v1.0/state/\(store)", contentType: "application/json",
            body: "[" + items.joined(separator: ",") + "]", expectedStatus: 204)
    }

    /// `value` (letters only, see `value(bytes:)`) as a JSON string.
    private static func jsonString(_ value: Data) -> String {
        "\"" + String(decoding: value, as: UTF8.self) + "\""
    }
}
