import Foundation
import HangarComponents
import Logging
import Testing

@testable import HangarRuntime

@Suite("Configuration files")
struct NodeConfigurationTests {
    let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// Writes files into a fresh directory and returns its path.
    func directory(_ files: [String: String]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for (name, text) in files { try text.write(toFile: "\(path)/\(name)", atomically: true, encoding: .utf8) }
        return path
    }

    func tenant(_ name: String, apps: String) -> String {
        """
        apiVersion: hangar.dev/v1alpha1
        kind: Tenant
        metadata:
          name: \(name)
        spec:
          apps:
        \(apps)
        """
    }

    @Test("with no directories the development default is one tenant, one app, tokenless TCP, statestore and pubsub")
    func developmentDefault() throws {
        let configuration = try NodeConfiguration.load(
            tenancyDirectory: nil, resourcesDirectory: nil, registry: .node, logger: logger)
        #expect(configuration.tenants.map(\.namespace) == ["default"])
        #expect(configuration.apps.map(\.id) == [AppID(namespace: "default", appId: "default")])
        #expect(configuration.tokenlessTCPApp == AppID(namespace: "default", appId: "default"))
        #expect(configuration.components.map(\.name) == ["statestore", "pubsub"])
        #expect(configuration.components.map(\.type) == ["state.sqlite", "pubsub.sqlite"])
    }

    @Test("a tenant file with apps, tokens, ids and quotas is parsed")
    func parsesTenant() throws {
        let dir = try directory([
            "a.yaml": tenant(
                "team-a",
                apps: """
                        - appId: orders
                          uids: [1000, 1001]
                          gids: [2000]
                          apiToken: s3cret
                          quotas: {requestsPerSecond: 10, maxStreams: 5}
                        - appId: billing
                    """) + "\n  quotas:\n    requestsPerSecond: 100\n    burst: 200\n    maxStateBytes: 1048576\n"
        ])
        let configuration = try NodeConfiguration.load(
            tenancyDirectory: dir, resourcesDirectory: nil, registry: .node, logger: logger)
        let team = try #require(configuration.tenants.first)
        #expect(team.namespace == "team-a")
        #expect(team.apps.map(\.appId) == ["orders", "billing"])
        #expect(team.apps[0].uids == [1000, 1001])
        #expect(team.apps[0].gids == [2000])
        #expect(team.apps[0].apiToken == "s3cret")
        #expect(team.apps[0].quotas?.requestsPerSecond == 10)
        #expect(team.apps[0].quotas?.maxStreams == 5)
        #expect(team.quotas == Quotas(requestsPerSecond: 100, burst: 200, maxStateBytes: 1_048_576))
        #expect(configuration.tokenlessTCPApp == nil)
    }

    @Test(
        "hostile or invalid names are refused with the file and the field",
        arguments: [
            ("../x", "orders", "metadata.name"),
            ("team-a", "a||b", "spec.apps[0].appId"),
            ("Team_A", "orders", "metadata.name"),
            ("team-a", "", "spec.apps[0].appId"),
            ("team-a", String(repeating: "a", count: 64), "spec.apps[0].appId"),
        ])
    func refusesBadNames(namespace: String, appId: String, field: String) throws {
        let dir = try directory(["bad.yaml": tenant("\"\(namespace)\"", apps: "    - appId: \"\(appId)\"")])
        let error = #expect(throws: ConfigurationError.self) {
            try NodeConfiguration.load(tenancyDirectory: dir, resourcesDirectory: nil, registry: .node, logger: logger)
        }
        #expect(error?.path == "\(dir)/bad.yaml")
        #expect(error?.field == field)
    }

    @Test("a tenant's weight is read, 1 by default")
    func weight() throws {
        let dir = try directory([
            "a.yaml": tenant("team-a", apps: "    - appId: a") + "\n  weight: 3\n",
            "b.yaml": tenant("team-b", apps: "    - appId: a"),
        ])
        let configuration = try NodeConfiguration.load(
            tenancyDirectory: dir, resourcesDirectory: nil, registry: .node, logger: logger)
        #expect(configuration.tenants.map(\.weight) == [3, 1])
    }

    @Test("a YAML syntax error names the file")
    func yamlSyntaxError() throws {
        let dir = try directory(["broken.yaml": "apiVersion: [unclosed\nkind: Tenant\n"])
        let error = #expect(throws: ConfigurationError.self) {
            try NodeConfiguration.load(tenancyDirectory: dir, resourcesDirectory: nil, registry: .node, logger: logger)
        }
        #expect(error?.path == "\(dir)/broken.yaml")
        #expect(error?.message.contains("invalid YAML") == true)
    }

    @Test("a mapping key that is itself a mapping is refused, not a crash (found by fuzzing)")
    func nonScalarKey() throws {
        // Fuzz/Corpus/resource-yaml/non-scalar-mapping-key: Yams's constructor traps on such a key.
        let dir = try directory([
            "res.yaml": """
            apiVersion: dapr.io/v1alpha1
            kind: Resiliency
            metadata: {name: res}
            spec:
              targets:
                apps:
                  orders: {timeout: general,{retry: backoff}}
            """
        ])
        let error = #expect(throws: ConfigurationError.self) {
            try NodeConfiguration.load(tenancyDirectory: nil, resourcesDirectory: dir, registry: .node, logger: logger)
        }
        #expect(error?.path == "\(dir)/res.yaml")
        #expect(error?.message.contains("a mapping key is not a scalar") == true)
    }

    @Test("unknown fields, bad quotas, duplicate apps and shared tokens are refused")
    func refusesInconsistencies() throws {
        let cases: [(String, String)] = [
            (tenant("t", apps: "    - appId: a\n      colour: blue"), "spec.apps[0].colour"),
            (tenant("t", apps: "    - appId: a") + "\n  quotas:\n    burst: 0\n", "spec.quotas.burst"),
            (tenant("t", apps: "    - appId: a\n    - appId: a"), "spec.apps[1].appId"),
            (
                tenant("t", apps: "    - appId: a\n      apiToken: x\n    - appId: b\n      apiToken: x"),
                "spec.apps[b].apiToken"
            ),
            (tenant("t", apps: "    - appId: a\n      uids: [-1]"), "spec.apps[0].uids"),
            (
                tenant("t", apps: "    - appId: a\n      quotas: {maxStateBytes: 10}"),
                "spec.apps[0].quotas.maxStateBytes"
            ),
            (tenant("t", apps: "    - appId: a") + "\n  weight: 0\n", "spec.weight"),
            (tenant("t", apps: "    - appId: a") + "\n  weight: 101\n", "spec.weight"),
            (tenant("t", apps: "    - appId: a") + "\n  quotas:\n    maxConnections: -3\n", "spec.quotas.maxConnections"),
            (tenant("t", apps: "    - appId: a") + "\n  quotas:\n    maxStreams: 0\n", "spec.quotas.maxStreams"),
            (
                tenant("t", apps: "    - appId: a") + "\n  quotas:\n    maxSubscriptions: 0\n",
                "spec.quotas.maxSubscriptions"
            ),
            (
                tenant("t", apps: "    - appId: a\n      quotas: {maxSubscriptions: 10}"),
                "spec.apps[0].quotas.maxSubscriptions"
            ),
        ]
        for (text, field) in cases {
            let dir = try directory(["t.yaml": text])
            let error = #expect(throws: ConfigurationError.self) {
                try NodeConfiguration.load(
                    tenancyDirectory: dir, resourcesDirectory: nil, registry: .node, logger: logger)
            }
            #expect(error?.field == field, "\(text)")
        }
    }

    @Test("components: namespace, scopes and metadata are read; unsupported types refused unless ignoreErrors")
    func components() throws {
        let dir = try directory([
            "c.yaml": """
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata:
              name: cache
              namespace: team-a
            spec:
              type: state.in-memory
              version: v1
              metadata:
                - name: keyPrefix
                  value: name
            scopes: [orders]
            ---
            apiVersion: dapr.io/v1alpha1
            kind: Subscription
            metadata:
              name: ignored
            """,
            "d.yaml": """
            apiVersion: dapr.io/v1alpha1
            kind: Component
            metadata:
              name: queue
            spec:
              type: pubsub.kafka
              ignoreErrors: true
            """,
        ])
        let configuration = try NodeConfiguration.load(
            tenancyDirectory: nil, resourcesDirectory: dir, registry: .node, logger: logger)
        #expect(configuration.components.count == 1)
        let cache = try #require(configuration.components.first)
        #expect(cache.namespace == "team-a")
        #expect(cache.scopes == ["orders"])
        #expect(cache.metadata["keyPrefix"] == "name")
        #expect(cache.isVisible(to: AppID(namespace: "team-a", appId: "orders")))
        #expect(!cache.isVisible(to: AppID(namespace: "team-a", appId: "billing")))
        #expect(!cache.isVisible(to: AppID(namespace: "team-b", appId: "orders")))

        let strict = try directory([
            "e.yaml": "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: q}\nspec: {type: pubsub.kafka}\n"
        ])
        let error = #expect(throws: ConfigurationError.self) {
            try NodeConfiguration.load(
                tenancyDirectory: nil, resourcesDirectory: strict, registry: .node, logger: logger)
        }
        #expect(error?.field == "spec.type")
    }

    @Test(
        "DNS-1123 labels",
        arguments: [
            ("a", true), ("team-a", true), ("a1-b2", true), ("-a", false), ("a-", false),
            ("A", false), ("a.b", false), ("a_b", false), ("", false), ("../x", false), ("a||b", false),
        ])
    func labels(name: String, valid: Bool) {
        #expect(Names.isDNS1123Label(name) == valid)
    }

    @Test(
        "the key separator is found anywhere in a key",
        arguments: [
            ("a||b", true), ("||", true), ("a|b", false),
            ("|a|", false), ("ab||", true), ("", false), ("ü||x", true),
        ])
    func separator(key: String, contains: Bool) {
        #expect(Names.containsKeySeparator(key) == contains)
    }

    @Test("Go durations as Dapr metadata writes them")
    func durations() {
        #expect(GoDuration.parse("2s") == .seconds(2))
        #expect(GoDuration.parse("500ms") == .milliseconds(500))
        #expect(GoDuration.parse("1h30m") == .seconds(5400))
        #expect(GoDuration.parse("15") == .seconds(15))
        #expect(GoDuration.parse("abc") == nil)
        #expect(GoDuration.parse("") == nil)
    }
}
