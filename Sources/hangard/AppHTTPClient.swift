import AsyncHTTPClient
import NIOCore
import HangarSync

/// The one HTTP client of every HTTP app channel (its pool keeps connections per app address), made when the first
/// app with an HTTP app channel appears, so a node whose apps are all gRPC never starts one. No redirects are
/// followed, nothing is decompressed, and connecting gives up after 3 s so that a call to an app that is down fails
/// fast.
final class AppHTTPClient: Sendable {
    private let group: any EventLoopGroup
    private let made = Locked<HTTPClient?>(nil)

    init(group: any EventLoopGroup) {
        self.group = group
    }

    /// The client, made on first use.
    var client: HTTPClient {
        made.withLock { made in
            if let client = made { return client }
            var configuration = HTTPClient.Configuration()
            configuration.redirectConfiguration = .disallow
            configuration.decompression = .disabled
            configuration.timeout = .init(connect: .seconds(3))
            let client = HTTPClient(eventLoopGroup: group, configuration: configuration)
            made = client
            return client
        }
    }

    /// Shuts the client down if it was made (AsyncHTTPClient requires it before the client goes away).
    func shutdown() async throws {
        guard let client = made.withLock({ $0 }) else { return }
        try await client.shutdown()
    }
}
