import Foundation

/// A generated `Tenant`: its namespace, its app ids and its `spec.quotas` (field name → value).
struct BenchTenant: Sendable {
    var namespace: String
    var apps: [String]
    var quotas: KeyValuePairs<String, Int>

    /// Quotas far above anything a benchmark reaches, as the `run` command's tenant has.
    static let unlimited: KeyValuePairs<String, Int> = [
        "requestsPerSecond": 100_000_000, "burst": 100_000_000, "maxConcurrentRequests": 1_000_000,
        "maxConnections": 1_000_000,
    ]

    /// The Tenant YAML document.
    var yaml: String {
        var text = """
            apiVersion: hangar.dev/v1alpha1
            kind: Tenant
            metadata:
              name: \(namespace)
            spec:

            """
        if !quotas.isEmpty {
            text += "  quotas:\n"
            for (field, value) in quotas { text += "    \(field): \(value)\n" }
        }
        text += "  apps:\n"
        for app in apps { text += "    - appId: \(app)\n" }
        return text
    }
}

extension BenchFixture {
    /// Creates the directory like `create(apps:resourcesSource:)`, but with the given tenants (one file each,
    /// `<namespace>.yaml`) instead of the tenant `bench`.
    static func create(tenants: [BenchTenant], resourcesSource: String) throws -> BenchFixture {
        var template = Array("/tmp/hb.XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw BenchError("cannot create a directory under /tmp") }
        let fixture = BenchFixture(root: String(cString: created), apps: tenants.reduce(0) { $0 + $1.apps.count })
        let files = FileManager.default
        for directory in [fixture.tenancy, fixture.resources, fixture.dataDirectory] {
            try files.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let components = try files.contentsOfDirectory(atPath: resourcesSource)
            .filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }
        guard !components.isEmpty else { throw BenchError("no Component YAML in \(resourcesSource)") }
        for file in components {
            try files.copyItem(atPath: resourcesSource + "/" + file, toPath: fixture.resources + "/" + file)
        }
        for tenant in tenants {
            try tenant.yaml.write(
                toFile: fixture.tenancy + "/\(tenant.namespace).yaml", atomically: true, encoding: .utf8)
            for app in tenant.apps where fixture.grpcSocket(namespace: tenant.namespace, app: app).utf8.count > 107 {
                throw BenchError(
                    "socket path \(fixture.grpcSocket(namespace: tenant.namespace, app: app)) is longer than 107 bytes")
            }
        }
        return fixture
    }

    /// The gRPC socket hangard binds for `app` of tenant `namespace`.
    func grpcSocket(namespace: String, app: String) -> String {
        "\(socketRoot)/\(namespace)/\(app)/dapr-\(app)-grpc.socket"
    }
}

extension ManagedProcess {
    /// Starts hangard on `fixture` as the `run` command does (Unix sockets only, no TCP listeners, log level info
    /// for the "hangard ready" line) and waits until it is ready; returns it and the seconds it took.
    /// `metricsListen` is the operator endpoint's address (`none`: no endpoint); `extraArguments` follow the rest.
    static func startHangard(
        executable: String, fixture: BenchFixture, metricsListen: String = "none", extraArguments: [String] = [],
        timeout: Duration = .seconds(120)
    ) async throws -> (process: ManagedProcess, secondsToReady: Double) {
        let process = try spawnHangard(
            executable: executable, fixture: fixture, metricsListen: metricsListen, extraArguments: extraArguments)
        do {
            return (process, try await process.waitForHangard(timeout: timeout))
        } catch {
            _ = await process.terminate(timeout: .seconds(10))
            throw error
        }
    }

    /// Spawns hangard on `fixture` (as `startHangard`) without waiting for it.
    static func spawnHangard(
        executable: String, fixture: BenchFixture, metricsListen: String = "none", extraArguments: [String] = []
    ) throws -> ManagedProcess {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw BenchError(
                "no hangard at \(executable); build it (swift build -c release --product hangard) or pass --hangard")
        }
        return try spawn(
            name: "hangard", executable: executable,
            arguments: [
                "--tenancy", fixture.tenancy, "--resources", fixture.resources, "--socket-root", fixture.socketRoot,
                "--data-dir", fixture.dataDirectory, "--http-listen", "none", "--grpc-listen", "none",
                "--metrics-listen", metricsListen, "--log-level", "info",
            ] + extraArguments,
            logPath: fixture.log("hangard"))
    }

    /// Waits for a spawned hangard's "hangard ready" (logged at info; nothing is logged per call at info);
    /// returns the seconds from spawn.
    func waitForHangard(timeout: Duration = .seconds(120)) async throws -> Double {
        try await waitForLog("hangard ready", timeout: timeout)
    }
}
