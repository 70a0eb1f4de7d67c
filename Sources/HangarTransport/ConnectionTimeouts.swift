package import NIOCore

/// The timeouts a client cannot defeat, for every connection of the API listeners (gRPC and HTTP/1, app sockets and
/// TCP), each a `hangard` flag. A slow or stalled client (slowloris, a request that stops half-way) then holds a
/// connection and its buffers for a bounded time only.
package struct ConnectionTimeouts: Sendable, Equatable {
    /// A request's headers must be complete within this once they begin (HTTP/2: also the connection preface
    /// from the connection's start); nil: no limit. `--header-timeout`, default 10 s.
    package var header: Duration?
    /// An unfinished request message or body that makes no progress (`progressBytes`) for this long is ended (gRPC:
    /// DEADLINE_EXCEEDED and RST_STREAM; HTTP/1: 408 and close). Streams idle by design (a subscription between
    /// messages) are exempt. nil: never. `--request-progress-timeout`, default 10 s.
    package var progress: Duration?
    /// What counts as progress for `progress`: at least this many bytes of the request since the last progress, or
    /// the rest of what the request waits for (the message or body ends). A client that trickles a byte every few
    /// seconds keeps its buffers pinned no longer than one that stops. `--request-progress-bytes`, default 1 KiB
    /// (a minimum rate of about 100 bytes/s at the default timeout); 1 makes every byte progress.
    package var progressBytes: Int
    /// A connection with no request in progress for this long is closed (HTTP/2: with GOAWAY); nil: never.
    /// `--idle-timeout`, default 5 min.
    package var idle: Duration?

    package init(
        header: Duration? = .seconds(10), progress: Duration? = .seconds(10), progressBytes: Int = 1024,
        idle: Duration? = .seconds(300)
    ) {
        self.header = header
        self.progress = progress
        self.progressBytes = max(1, progressBytes)
        self.idle = idle
    }

    /// No timeouts (tests of other behaviour, and tools that hold connections on purpose).
    package static let none = ConnectionTimeouts(header: nil, progress: nil, idle: nil)

    /// `amount` for a message: "10 s", "1.5 s" or "250 ms".
    package static func describe(_ amount: TimeAmount) -> String {
        let milliseconds = amount.nanoseconds / 1_000_000
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        if milliseconds % 1000 == 0 { return "\(milliseconds / 1000) s" }
        return "\(Double(milliseconds) / 1000) s"
    }
}
