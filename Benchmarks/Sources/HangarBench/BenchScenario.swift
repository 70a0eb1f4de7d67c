import ArgumentParser

/// What `--scenario` selects. The RSS numbers (idle, then every app connected once) are taken whenever hangard
/// runs; each state scenario runs a sequential phase (one caller) and, with `--concurrency` above 1, a concurrent
/// one. The `-http` scenarios call Dapr's HTTP API on the apps' HTTP sockets, the others gRPC. `memory` starts
/// hangards of its own (`--memory-apps`, `--memory-connected`) before the others. `invoke` measures service
/// invocation: callers call `AppCallback/OnInvoke` on the echo server directly, then `Dapr/InvokeService` through
/// hangard to the same echo server (declared as the app `callee`), so that the difference is what hangard adds; its
/// goals are ratios to GetState's, so they are printed when `get-memory` runs too (as in `all`). `stream` reads a
/// server stream of the echo server through hangard (proxied to the app `callee`) with a fast and a slow consumer
/// and a GetState loop on one connection, and directly as the reference (`StreamScenario`).
///
/// Issue 14 (pub/sub) adds `publish-memory` and `publish-sqlite` (PublishEvent, closed loop, on `mempubsub` and
/// `sqlpubsub`, beside GetState as the reference) and `pubsub` (publish → delivery latency with a streaming
/// subscriber, and the noisy neighbour for pub/sub: `PubSubScenario`). They need the pub/sub components
/// (`--resources bench/pubsub-resources`, as scripts/bench-pubsub.sh passes), so `all` (issue 13's run) leaves them
/// out.
///
/// Issue 15 (network backends) adds `get-redis` and `save-redis` on `redisstore` (`state.redis`), and
/// `get-postgresql` and `save-postgresql` on `pgstore` (`state.postgresql`). Their components point at a server the
/// caller started (scripts/bench-backends.sh writes them), so `all` leaves them out too; `--backend-pid` names the
/// server's process, whose CPU is then read beside hangard's.
enum BenchScenario: String, CaseIterable, ExpressibleByArgument, Sendable {
    case all
    case rss
    case getMemory = "get-memory"
    case saveMemory = "save-memory"
    case getSQLite = "get-sqlite"
    case saveSQLite = "save-sqlite"
    case getHTTP = "get-http"
    case saveHTTP = "save-http"
    case echo
    case memory
    case invoke
    case stream
    case publishMemory = "publish-memory"
    case publishSQLite = "publish-sqlite"
    case pubsub
    case getRedis = "get-redis"
    case saveRedis = "save-redis"
    case getPostgreSQL = "get-postgresql"
    case savePostgreSQL = "save-postgresql"

    /// What `all` runs: everything but the pub/sub and backend scenarios.
    static var all13: [BenchScenario] { allCases.filter { $0 != .all && !$0.isPubSub && !$0.isBackend } }

    /// A scenario on a network backend (issue 15): its component needs a server started outside the bench.
    var isBackend: Bool {
        self == .getRedis || self == .saveRedis || self == .getPostgreSQL || self == .savePostgreSQL
    }

    /// A pub/sub scenario (issue 14): needs the pub/sub components and, for `pubsub`, the second tenant.
    var isPubSub: Bool { self == .publishMemory || self == .publishSQLite || self == .pubsub }

    /// Whether the scenario needs the hangard the load scenarios run against.
    var needsDaemon: Bool { self != .echo && self != .all && self != .memory }

    /// Whether the scenario needs the echo server: as the baseline (`echo`), or as the app that is invoked
    /// (`invoke`, `stream`).
    var needsEchoServer: Bool { self == .echo || self == .invoke || self == .stream }

    /// Whether hangard must know the app `callee` (the echo server, invoked or proxied to).
    var needsCallee: Bool { self == .invoke || self == .stream }
}
