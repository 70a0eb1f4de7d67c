import Foundation

/// The files of one bench run, in a short temporary directory under /tmp (Unix socket paths must stay within
/// 107 bytes): a generated Tenant `bench` declaring `app-0` … `app-<n-1>`, the component YAML copied from
/// `bench/resources`, hangard's socket root and data directory, and the children's logs. For the `invoke`
/// scenario the Tenant also declares `callee`, whose app channel is the echo server's socket: hangard invokes the
/// same process the direct calls reach.
struct BenchFixture: Sendable {
    static let namespace = "bench"
    /// The app the `invoke` scenario invokes through hangard: the echo server, over gRPC `AppCallback`.
    static let calleeAppID = "callee"

    let root: String
    let apps: Int

    var tenancy: String { root + "/tenancy" }
    var resources: String { root + "/resources" }
    var socketRoot: String { root + "/s" }
    var dataDirectory: String { root + "/data" }
    var echoSocket: String { root + "/echo.socket" }
    /// The `pubsub` scenario's push receiver (the app `pusher`'s app channel), served by the bench itself.
    var pushSocket: String { root + "/push.socket" }

    static func appID(_ index: Int) -> String { "app-\(index)" }

    func grpcSocket(app index: Int) -> String { appSocket(index, "grpc") }

    func httpSocket(app index: Int) -> String { appSocket(index, "http") }

    /// `<socket root>/bench/app-<index>/dapr-app-<index>-<kind>.socket`, as hangard binds it.
    private func appSocket(_ index: Int, _ kind: String) -> String {
        let app = Self.appID(index)
        return "\(socketRoot)/\(Self.namespace)/\(app)/dapr-\(app)-\(kind).socket"
    }

    func log(_ name: String) -> String { "\(root)/\(name).log" }

    /// Creates the directory and writes the configuration; `resourcesSource` holds the Component YAML (nil when
    /// hangard is not started). With `callee`, the Tenant declares the app `callee` too, its app channel on the
    /// echo server's socket (hangard connects when the first call needs it, so the echo server may start later).
    /// With `pusher`, it declares the app `pusher` too (`PushReceiver`), its app channel on `pushSocket`.
    static func create(
        apps: Int, resourcesSource: String?, callee: Bool = false, pusher: Bool = false
    ) throws -> BenchFixture {
        var template = Array("/tmp/hb.XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw BenchError("cannot create a directory under /tmp") }
        let fixture = BenchFixture(root: String(cString: created), apps: apps)
        let files = FileManager.default
        for directory in [fixture.tenancy, fixture.resources, fixture.dataDirectory] {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        if let resourcesSource {
            let components = try files.contentsOfDirectory(atPath: resourcesSource)
                .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
            guard !components.isEmpty else { throw BenchError("no Component YAML in \(resourcesSource)") }
            for file in components {
                try files.copyItem(atPath: resourcesSource + "/" + file, toPath: fixture.resources + "/" + file)
            }
        }
        var tenant = """
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata:
              name: \(namespace)
            spec:
              # The benchmark measures the node, not its quotas: limits far above what it reaches.
              quotas:
                requestsPerSecond: 100000000
                burst: 100000000
                maxConcurrentRequests: 1000000
                maxConnections: 1000000
              apps:

            """
        for index in 0..<apps { tenant += "    - appId: \(appID(index))\n" }
        if callee {
            tenant += """
                    - appId: \(calleeAppID)
                      appChannel:
                        protocol: grpc
                        address: "unix://\(fixture.echoSocket)"

                """
        }
        if pusher {
            tenant += """
                    - appId: \(PushReceiver.appID)
                      appChannel:
                        protocol: grpc
                        address: "unix://\(fixture.pushSocket)"

                """
        }
        try tenant.write(toFile: fixture.tenancy + "/\(namespace).yaml", atomically: true, encoding: .utf8)
        guard fixture.grpcSocket(app: apps - 1).utf8.count <= 107 else {
            throw BenchError("socket path \(fixture.grpcSocket(app: apps - 1)) is longer than 107 bytes")
        }
        return fixture
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: root)
    }
}
