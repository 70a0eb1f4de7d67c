import ArgumentParser

/// How an attacking tenant tries to pin hangard's memory (issue 16): it opens `connections` connections to its
/// app's gRPC socket and `streams` SaveState streams spread over them, and on each sends HEADERS without
/// `grpc-timeout`, a message prefix declaring `messageBytes` bytes and all of the message but its last
/// `holdBack` bytes; then, every `trickleInterval` seconds, `trickleBytes` more on each stream whose bytes all went
/// out, so that the request is always in progress, but never its last byte. With `reopen`, a stream hangard ends is
/// opened again (a closed connection connected again) after `reopenDelay` seconds, for as long as the attack
/// lasts.
struct AttackPlan: Codable, Sendable {
    var name: String
    var connections: Int
    var streams: Int
    var reopen: Bool
    var messageBytes: Int
    var holdBack: Int
    var trickleInterval: Double
    /// Bytes trickled per stream each `trickleInterval` (never the message's last byte).
    var trickleBytes: Int = 1
    var reopenDelay: Double
    /// Bytes per DATA write (the HTTP/2 handler splits them into frames of the server's maximum frame size).
    var chunkBytes: Int

    /// The streams connection `index` carries: `streams` shared as evenly as possible.
    func streams(onConnection index: Int) -> Int {
        streams / connections + (index < streams % connections ? 1 : 0)
    }

    /// The request body's bytes (prefix included) sent before the trickle starts.
    var initialBytes: Int { 5 + messageBytes - holdBack }
}

/// The attack shapes `hangar-bench overload` runs, each on a hangard of its own.
enum AttackShape: String, CaseIterable, ExpressibleByArgument, Sendable {
    /// The issue's measurement: 64 streams (the default `maxConcurrentRequests`) over 8 connections.
    case issue
    /// As many streams as the default quotas could let through anywhere: 512 streams over 32 connections.
    case wide
    /// The issue's shape, and every stream hangard ends (or connection it closes) is opened again.
    case reopen

    func plan(
        messageBytes: Int, holdBack: Int, trickleInterval: Double, trickleBytes: Int, reopenDelay: Double
    ) -> AttackPlan {
        let (connections, streams) =
            switch self {
            case .issue, .reopen: (8, 64)
            case .wide: (32, 512)
            }
        return AttackPlan(
            name: rawValue, connections: connections, streams: streams, reopen: self == .reopen,
            messageBytes: messageBytes, holdBack: holdBack, trickleInterval: trickleInterval,
            trickleBytes: trickleBytes, reopenDelay: reopenDelay, chunkBytes: 64 * 1024)
    }
}
