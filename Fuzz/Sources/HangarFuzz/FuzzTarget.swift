import Foundation

/// What `hangar-fuzz` can fuzz, by the name scripts/fuzz.sh and Fuzz/Corpus use.
enum FuzzTarget: String, CaseIterable, Sendable {
    /// Bytes a client sends after the connection preface, into the gRPC server's HTTP/2 connection.
    case http2
    /// One request header block (HEADERS, maybe CONTINUATION), decoded by NIOHPACK and checked by the gRPC server.
    case hpack
    /// gRPC's length-prefixed messages, fed to `GRPCMessageDeframer` in chunks and checked against a reference.
    case grpcDeframer = "grpc-deframer"
    /// Bytes a client sends to the HTTP/1.1 server: NIOHTTP1's decoder, `HTTPConnectionHandler`, the router and
    /// Dapr's routes.
    case http1
    /// A body for the state routes (save, bulk get, transaction) in a well-formed HTTP/1.1 request.
    case stateJSON = "state-json"
    /// A `Tenant` file, loaded as the tenancy directory's only file.
    case tenantYAML = "tenant-yaml"
    /// A resources file (Component, Subscription, Resiliency, Configuration), loaded as the resources directory's.
    case resourceYAML = "resource-yaml"
    /// A CloudEvent published as `application/cloudevents+json` or as JSON data, enveloped and delivered.
    case cloudEvent = "cloudevent"
    /// A Redis server's replies, fed to `RESPDecoder` in chunks and checked against decoding them at once.
    case resp

    /// The target HANGAR_FUZZ_TARGET names; the process exits with the list of targets when it names none.
    static let selected: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["HANGAR_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            let names = allCases.map(\.rawValue).joined(separator: " ")
            FileHandle.standardError.write(Data("hangar-fuzz: set HANGAR_FUZZ_TARGET to one of: \(names)\n".utf8))
            exit(2)
        }
        return target
    }()

    /// HANGAR_FUZZ_VERBOSE is set: the front-end targets print what the server wrote (to check a seed does what it
    /// should; too slow for fuzzing).
    static let verbose = ProcessInfo.processInfo.environment["HANGAR_FUZZ_VERBOSE"] != nil

    func run(_ input: ArraySlice<UInt8>) {
        switch self {
        case .http2: HTTP2Fuzz.run(input)
        case .hpack: HTTP2Fuzz.runHeaderBlock(input)
        case .grpcDeframer: DeframerFuzz.run(input)
        case .http1: HTTP1Fuzz.run(input)
        case .stateJSON: HTTP1Fuzz.runStateBody(input)
        case .tenantYAML: YAMLFuzz.run(input, kind: .tenancy)
        case .resourceYAML: YAMLFuzz.run(input, kind: .resources)
        case .cloudEvent: CloudEventFuzz.run(input)
        case .resp: RESPFuzz.run(input)
        }
    }
}

/// Splits input into the pieces a peer's writes arrive in: `size` bytes each, or all at once when `size` is 0, so
/// that the fuzzer also explores frames and messages cut at every point.
func chunked(_ bytes: ArraySlice<UInt8>, size: UInt8) -> [ArraySlice<UInt8>] {
    guard size > 0, !bytes.isEmpty else { return [bytes] }
    var chunks: [ArraySlice<UInt8>] = []
    var start = bytes.startIndex
    while start < bytes.endIndex {
        let end = min(start + Int(size), bytes.endIndex)
        chunks.append(bytes[start..<end])
        start = end
    }
    return chunks
}
