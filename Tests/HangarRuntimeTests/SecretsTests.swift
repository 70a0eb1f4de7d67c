import Foundation
import HangarComponents
import Logging
import NIOCore
import NIOPosix
import Testing

@testable import HangarRuntime
import HangarSync

/// Every log event, rendered with its metadata, for checking what reached the log.
final class LogCapture: Sendable {
    let lines = Locked<[String]>([])

    var logger: Logger {
        Logger(label: "capture") { _ in CapturingLogHandler(capture: self) }
    }

    var text: String { lines.withLock { $0.joined(separator: "\n") } }
}

struct CapturingLogHandler: LogHandler {
    let capture: LogCapture
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let line = "\(event.message) \(all.sorted { $0.key < $1.key }) \(event.error.map { "\($0)" } ?? "")"
        capture.lines.withLock { $0.append(line) }
    }
}

/// The secrets building block in the runtime: stores are each one tenant's, node-wide stores serve only node-wide
/// components, Configuration secret scopes, `secretKeyRef` resolution and refresh, and values kept out of what the
/// node shows.
@Suite("Secrets")
struct SecretsTests {
    static let group = MultiThreadedEventLoopGroup.singleton
    static let ordersA = Caller(app: AppID(namespace: "team-a", appId: "orders"), transport: .unixSocket)
    static let billingA = Caller(app: AppID(namespace: "team-a", appId: "billing"), transport: .unixSocket)
    static let ordersB = Caller(app: AppID(namespace: "team-b", appId: "orders"), transport: .unixSocket)

    /// A temporary directory for secret files and the node's data.
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-secrets-rt-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func write(_ object: [String: Any], to path: String) throws {
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// A Component resource.
    static func component(
        _ name: String, namespace: String?, type: String, metadata: [String: String] = [:],
        secretRefs: [String: (String, String)] = [:], secretStore: String? = nil
    ) -> String {
        var lines = ["apiVersion: dapr.io/v1alpha1", "kind: Component", "metadata:", "  name: \(name)"]
        if let namespace { lines.append("  namespace: \(namespace)") }
        lines += ["spec:", "  type: \(type)", "  version: v1", "  metadata:"]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            lines += ["  - name: \(key)", "    value: \"\(value)\""]
        }
        for (key, (secret, secretKey)) in secretRefs.sorted(by: { $0.key < $1.key }) {
            lines += ["  - name: \(key)", "    secretKeyRef: {name: \(secret), key: \(secretKey)}"]
        }
        if metadata.isEmpty && secretRefs.isEmpty { lines[lines.count - 1] = "  metadata: []" }
        if let secretStore { lines += ["auth:", "  secretStore: \(secretStore)"] }
        return lines.joined(separator: "\n") + "\n"
    }

    static func fileStore(_ name: String, namespace: String?, file: String, multiValued: Bool = false) -> String {
        component(
            name, namespace: namespace, type: "secretstores.local.file",
            metadata: ["secretsFile": file, "multiValued": multiValued ? "true" : "false"])
    }

    static func runtime(_ files: [String: String], data: String, logger: Logger = ResourceFixture.logger) throws
        -> Runtime
    {
        try Runtime(
            configuration: try ResourceFixture.load(files), dataDirectory: data, maxRequestBytes: 1 << 20,
            componentRegistry: .node, eventLoopGroup: group, threadPool: NIOThreadPool.singleton,
            etagSealer: ETagSealer(secret: Array(repeating: 1, count: 32)), logger: logger)
    }

    func health(_ runtime: Runtime, _ name: String, _ namespace: String?) -> ComponentHealth? {
        runtime.components.health.first { $0.name == name && $0.namespace == namespace }
    }

    @Test("each tenant reads its own store; another tenant's store and node-wide stores are not found")
    func isolation() async throws {
        let root = try Self.directory()
        try Self.write(["token": "a-token"], to: root + "/a.json")
        try Self.write(["token": "b-token"], to: root + "/b.json")
        try Self.write(["token": "node-token"], to: root + "/node.json")
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json"),
                "b.yaml": Self.fileStore("vault", namespace: "team-b", file: root + "/b.json"),
                "only-b.yaml": Self.fileStore("b-only", namespace: "team-b", file: root + "/b.json"),
                "node.yaml": Self.fileStore("node-secrets", namespace: nil, file: root + "/node.json"),
            ], data: root)
        #expect(
            try runtime.secrets.get(Self.ordersA, store: "vault", name: "token", metadata: [:]) == ["token": "a-token"])
        #expect(
            try runtime.secrets.get(Self.ordersB, store: "vault", name: "token", metadata: [:]) == ["token": "b-token"])
        #expect(
            try runtime.secrets.bulkGet(Self.ordersA, store: "vault", metadata: [:]) == ["token": ["token": "a-token"]])
        for (caller, store) in [
            (Self.ordersA, "b-only"), (Self.ordersA, "node-secrets"), (Self.ordersB, "node-secrets"),
        ] {
            let error = #expect(throws: APIError.self) {
                try runtime.secrets.get(caller, store: store, name: "token", metadata: [:])
            }
            #expect(error?.errorCode == "ERR_SECRET_STORE_NOT_FOUND")
            #expect(error?.httpStatus == 401)
            #expect(error?.rpcCode == .invalidArgument)
            #expect(error?.message == "failed finding secret store with key \(store)")
        }
        let missing = #expect(throws: APIError.self) {
            try runtime.secrets.get(Self.ordersA, store: "vault", name: "nope", metadata: [:])
        }
        #expect(missing?.errorCode == "ERR_SECRET_GET")
        #expect(missing?.httpStatus == 500)
        #expect(
            missing?.message == "failed getting secret with key nope from secret store vault: secret nope not found")
        // The node-wide store is UP (for node-wide components), yet listed to no app.
        #expect(health(runtime, "node-secrets", nil)?.status == .up)
        #expect(!runtime.components.visibleComponents(to: Self.ordersA.app).contains { $0.name == "node-secrets" })
        #expect(runtime.components.visibleComponents(to: Self.ordersA.app).contains { $0.name == "vault" })
        #expect(runtime.components.features(of: runtime.components.specs.first { $0.name == "vault" }!).isEmpty)
    }

    @Test("a tenant with no store of its own is told secret stores are not configured, node-wide ones or not")
    func notConfigured() async throws {
        let root = try Self.directory()
        try Self.write(["token": "node-token"], to: root + "/node.json")
        try Self.write(["token": "b-token"], to: root + "/b.json")
        let runtime = try Self.runtime(
            [
                "node.yaml": Self.fileStore("node-secrets", namespace: nil, file: root + "/node.json"),
                "b.yaml": Self.fileStore("vault", namespace: "team-b", file: root + "/b.json"),
            ], data: root)
        for store in ["node-secrets", "vault"] {
            let error = #expect(throws: APIError.self) {
                try runtime.secrets.get(Self.ordersA, store: store, name: "token", metadata: [:])
            }
            #expect(error?.errorCode == "ERR_SECRET_STORES_NOT_CONFIGURED")
            #expect(error?.httpStatus == 500)
            #expect(error?.rpcCode == .failedPrecondition)
        }
    }

    @Test(
        "Dapr's secret scope rules",
        arguments: [
            // (defaultAccess deny, allowed, denied, secret, allowed?)
            (false, [], [], "a", true),
            (true, [], [], "a", false),
            (false, ["a"], [], "a", true),
            (false, ["a"], [], "b", false),
            (true, ["a"], [], "a", true),
            (false, [], ["a"], "a", false),
            (false, [], ["a"], "b", true),
            (true, [], ["a"], "b", false),
            (true, ["a"], ["a"], "a", true),
        ] as [(Bool, Set<String>, Set<String>, String, Bool)])
    func scopeRules(deny: Bool, allowed: Set<String>, denied: Set<String>, secret: String, expected: Bool) {
        let scope = SecretScopes.Scope(defaultAccessDenies: deny, allowedSecrets: allowed, deniedSecrets: denied)
        #expect(scope.allows(secret) == expected)
        #expect(SecretScopes(scopes: ["s": scope]).allows(store: "other", secret: secret))
    }

    @Test("a Configuration's secret scopes refuse GetSecret with ERR_PERMISSION_DENIED and filter bulk")
    func configurationScopes() async throws {
        let root = try Self.directory()
        try Self.write(["db": "1", "api": "2", "admin": "3"], to: root + "/a.json")
        let configuration = """
            apiVersion: dapr.io/v1alpha1
            kind: Configuration
            metadata: {name: appconfig, namespace: team-a}
            spec:
              secrets:
                scopes:
                  - storeName: vault
                    defaultAccess: deny
                    allowedSecrets: [db, api]
                  - storeName: open
                    deniedSecrets: [admin]
            """
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json"),
                "open.yaml": Self.fileStore("open", namespace: "team-a", file: root + "/a.json"),
                "b.yaml": Self.fileStore("vault", namespace: "team-b", file: root + "/a.json"),
                "config.yaml": configuration,
            ], data: root)
        #expect(try runtime.secrets.get(Self.ordersA, store: "vault", name: "db", metadata: [:]) == ["db": "1"])
        let denied = #expect(throws: APIError.self) {
            try runtime.secrets.get(Self.billingA, store: "vault", name: "admin", metadata: [:])
        }
        #expect(denied?.errorCode == "ERR_PERMISSION_DENIED")
        #expect(denied?.httpStatus == 403)
        #expect(denied?.rpcCode == .permissionDenied)
        #expect(denied?.message == #"access denied by policy to get "admin" from "vault""#)
        #expect(Set(try runtime.secrets.bulkGet(Self.ordersA, store: "vault", metadata: [:]).keys) == ["db", "api"])
        #expect(Set(try runtime.secrets.bulkGet(Self.ordersA, store: "open", metadata: [:]).keys) == ["db", "api"])
        #expect(throws: APIError.self) {
            try runtime.secrets.get(Self.ordersA, store: "open", name: "admin", metadata: [:])
        }
        // team-b has no Configuration: everything in its own store.
        #expect(try runtime.secrets.get(Self.ordersB, store: "vault", name: "admin", metadata: [:]) == ["admin": "3"])
    }

    @Test("an invalid secret scope makes the Configuration invalid, and its apps read no secret")
    func invalidScopeFailsClosed() async throws {
        let root = try Self.directory()
        try Self.write(["db": "1"], to: root + "/a.json")
        let configuration = """
            apiVersion: dapr.io/v1alpha1
            kind: Configuration
            metadata: {name: appconfig, namespace: team-a}
            spec:
              secrets:
                scopes: [{storeName: vault, defaultAccess: sometimes}]
            """
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json"),
                "config.yaml": configuration,
            ], data: root)
        let error = #expect(throws: APIError.self) {
            try runtime.secrets.get(Self.ordersA, store: "vault", name: "db", metadata: [:])
        }
        #expect(error?.errorCode == "ERR_PERMISSION_DENIED")
        #expect(error?.message.contains("must be allow or deny") == true)
    }

    @Test("secretKeyRef feeds a component from its namespace's store; what does not resolve leaves it DOWN, named")
    func secretKeyRefResolution() async throws {
        let root = try Self.directory()
        try Self.write(["db": ["table": "tenant_a_state"]], to: root + "/a.json")
        try Self.write(["db": ["table": "node_state"]], to: root + "/node.json")
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json", multiValued: true),
                "node.yaml": Self.fileStore("node-vault", namespace: nil, file: root + "/node.json", multiValued: true),
                "state-a.yaml": Self.component(
                    "store", namespace: "team-a", type: "state.sqlite", metadata: ["connectionString": "a.db"],
                    secretRefs: ["tableName": ("db", "table")], secretStore: "vault"),
                // A node-wide component cannot read a namespace's store, even with a name that exists there.
                "shared.yaml": Self.component(
                    "shared", namespace: nil, type: "state.sqlite", metadata: ["connectionString": "s.db"],
                    secretRefs: ["tableName": ("db", "table")], secretStore: "vault"),
                "node-state.yaml": Self.component(
                    "node-store", namespace: nil, type: "state.sqlite", metadata: ["connectionString": "n.db"],
                    secretRefs: ["tableName": ("db", "table")], secretStore: "node-vault"),
                // A namespaced component cannot read the node's store.
                "b.yaml": Self.component(
                    "store", namespace: "team-b", type: "state.sqlite", metadata: ["connectionString": "b.db"],
                    secretRefs: ["tableName": ("db", "table")], secretStore: "node-vault"),
                "missing-key.yaml": Self.component(
                    "nokey", namespace: "team-a", type: "state.sqlite", metadata: ["connectionString": "k.db"],
                    secretRefs: ["tableName": ("db", "nope")], secretStore: "vault"),
            ], data: root)
        await runtime.components.initialise()
        let pool = try #require(runtime.components.all.first { $0.spec.poolKey == "team-a/store" })
        #expect(pool.secrets == .values(["tableName": "tenant_a_state"]))
        #expect(health(runtime, "store", "team-a")?.status == .up)
        #expect(health(runtime, "node-store", nil)?.status == .up)
        let item = StateItemRequest(key: "k", value: Data("v".utf8))
        try await runtime.state.save(Self.ordersA, store: "store", items: [item], on: Self.group.any()).get()
        // The schema is in the database file or, not checkpointed yet, in its write-ahead log.
        let tables = ["/a.db", "/a.db-wal"].compactMap { try? String(contentsOfFile: root + $0, encoding: .isoLatin1) }
            .joined()
        #expect(tables.contains("tenant_a_state"), "the table named by the secret was created")

        let shared = try #require(health(runtime, "shared", nil))
        #expect(shared.status == .down)
        #expect(shared.error?.contains("secret store 'vault' (auth.secretStore) is not declared node-wide") == true)
        let crossed = try #require(health(runtime, "store", "team-b"))
        #expect(crossed.status == .down)
        #expect(
            crossed.error?.contains(
                "secret store 'node-vault' (auth.secretStore) is not declared in namespace 'team-b'") == true)
        let nokey = try #require(health(runtime, "nokey", "team-a"))
        #expect(nokey.status == .down)
        #expect(nokey.error?.contains("spec.metadata.tableName: secretKeyRef {name: db, key: nope}") == true)
        #expect(nokey.error?.contains("secret db has no key nope") == true)
        try await runtime.components.close(on: Self.group.any()).get()
    }

    @Test("secretKeyRef is refused, naming the field, in a secret store and for metadata the runtime reads")
    func secretKeyRefRefused() throws {
        let cases = [
            Self.component(
                "vault", namespace: "team-a", type: "secretstores.local.file",
                secretRefs: ["secretsFile": ("f", "f")], secretStore: "other"),
            Self.component(
                "store", namespace: "team-a", type: "state.in-memory", secretRefs: ["keyPrefix": ("p", "p")]),
            Self.component(
                "store", namespace: "team-a", type: "state.sqlite", metadata: ["connectionString": "x.db"],
                secretRefs: ["maxConcurrentOperations": ("n", "n")]),
        ]
        for (text, field) in zip(cases, ["secretsFile", "keyPrefix", "maxConcurrentOperations"]) {
            let error = #expect(throws: ConfigurationError.self) { try ResourceFixture.load(["c.yaml": text]) }
            #expect(error?.field == "spec.metadata.\(field)")
        }
        // A required metadata name given by a secretKeyRef satisfies the check; no unknown name is reported.
        let loaded = try ResourceFixture.load([
            "c.yaml": Self.component(
                "vault", namespace: "team-a", type: "secretstores.local.directory",
                metadata: ["secretsDirectory": "/nonexistent"]),
            "s.yaml": Self.component(
                "store", namespace: "team-a", type: "state.sqlite", secretRefs: ["connectionString": ("db", "path")],
                secretStore: "vault"),
        ])
        let store = try #require(loaded.components.first { $0.name == "store" })
        #expect(store.secretRefs == ["connectionString": SecretKeyRef(name: "db", key: "path")])
        #expect(store.secretStore == "vault")
        #expect(store.metadata["connectionString"] == nil)
    }

    @Test("a changed secret file replaces its store and re-creates the components that read it; the rest stay")
    func refresh() async throws {
        let root = try Self.directory()
        try Self.write(["table": "first_table", "other": "x"], to: root + "/a.json")
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json"),
                "state-a.yaml": Self.component(
                    "store", namespace: "team-a", type: "state.sqlite", metadata: ["connectionString": "a.db"],
                    secretRefs: ["tableName": ("table", "table")], secretStore: "vault"),
                "missing.yaml": Self.component(
                    "later", namespace: "team-a", type: "state.in-memory",
                    secretRefs: ["keyPrefix-unused": ("later", "later")], secretStore: "vault"),
            ], data: root)
        await runtime.components.initialise()
        let before = try #require(runtime.components.all.first { $0.spec.poolKey == "team-a/store" })
        let untouchedBefore = try #require(runtime.components.all.first { $0.spec.poolKey == "*/pubsub" })
        #expect(health(runtime, "later", "team-a")?.status == .down)

        try runtime.refreshSecrets()
        #expect(runtime.components.all.contains { $0 === before }, "nothing changed: nothing is re-created")

        try Self.write(["table": "second_table", "other": "x", "later": "now"], to: root + "/a.json")
        try runtime.refreshSecrets()
        await runtime.components.initialise()
        let after = try #require(runtime.components.all.first { $0.spec.poolKey == "team-a/store" })
        #expect(after !== before)
        #expect(after.secrets == .values(["tableName": "second_table"]))
        #expect(runtime.components.all.contains { $0 === untouchedBefore })
        #expect(health(runtime, "later", "team-a")?.status == .up, "a reference that now resolves comes UP")
        #expect(
            try runtime.secrets.get(Self.ordersA, store: "vault", name: "table", metadata: [:]) == [
                "table": "second_table"
            ])
        try await runtime.components.close(on: Self.group.any()).get()
    }

    @Test("a resolved secret never reaches the log, the health detail, GetMetadata or an error")
    func redaction() async throws {
        let root = try Self.directory()
        let value = "Sup3r-Secret-Table-Name"
        try Self.write(["table": value], to: root + "/a.json")
        let capture = LogCapture()
        let runtime = try Self.runtime(
            [
                "a.yaml": Self.fileStore("vault", namespace: "team-a", file: root + "/a.json"),
                // The value is not a valid table name: SQLite's factory refuses it, quoting it.
                "state-a.yaml": Self.component(
                    "store", namespace: "team-a", type: "state.sqlite", metadata: ["connectionString": "a.db"],
                    secretRefs: ["tableName": ("table", "table")], secretStore: "vault"),
            ], data: root, logger: capture.logger)
        await runtime.components.initialise()
        runtime.health.markListenersUp()
        let store = try #require(health(runtime, "store", "team-a"))
        #expect(store.status == .down)
        #expect(store.error?.contains(ResolvedSecrets.mask) == true)
        let refused = await #expect(throws: APIError.self) {
            try await runtime.state.get(Self.ordersA, store: "store", key: "k", on: Self.group.any()).get()
        }
        let detail = String(decoding: runtime.health.detailJSON(), as: UTF8.self)
        let metadata = runtime.metadata.get(Self.ordersA)
        #expect(!capture.text.isEmpty)
        #expect(!capture.text.contains(value))
        #expect(!detail.contains(value))
        #expect(detail.contains(ResolvedSecrets.mask))
        #expect(!"\(metadata)".contains(value))
        #expect(refused.map { !"\($0)".contains(value) } == true)
        #expect(!"\(runtime.configuration)".contains(value), "specs hold references, never values")
        try await runtime.components.close(on: Self.group.any()).get()
    }

    @Test("a redacting logger masks values in the message, the metadata and the error")
    func redactingLogHandler() {
        let capture = LogCapture()
        let logger = RedactingLogHandler.wrapping(capture.logger, secrets: .values(["password": "hunter2"]))
        struct Failure: Error, CustomStringConvertible { var description: String { "auth hunter2 failed" } }
        logger.error(
            "connecting with hunter2", error: Failure(),
            metadata: ["url": "redis://:hunter2@host", "list": .array(["hunter2"])])
        #expect(capture.text.contains("connecting with [redacted]"))
        #expect(capture.text.contains("redis://:[redacted]@host"))
        #expect(capture.text.contains("auth [redacted] failed"))
        #expect(!capture.text.contains("hunter2"))
    }
}
