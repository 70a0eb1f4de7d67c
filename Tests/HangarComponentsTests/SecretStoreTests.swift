import Foundation
import HangarComponents
import Logging
import NIOPosix
import Testing

/// The local secret stores: Dapr's `secretstores.local.file` and `secretstores.local.env`, and Hangar's
/// `secretstores.local.directory` (files as kubelet mounts a Secret).
@Suite("Secret stores")
struct SecretStoreTests {
    /// A fresh temporary directory.
    static func directory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hangar-secrets-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func write(_ text: String, to path: String) throws {
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    static let document = """
        {"redisPassword": "p1", "db": {"user": "u", "tls": {"ca": "c"}}, "hosts": ["a", "b"], "port": 6379,
         "tls": true, "none": null}
        """

    static func fileStore(_ text: String, _ settings: (String) -> LocalFileSecretStore.Settings) throws
        -> LocalFileSecretStore
    {
        let path = try directory() + "/secrets.json"
        try write(text, to: path)
        return try LocalFileSecretStore(settings: settings(path))
    }

    @Test("the file store flattens nested values with ':' by default, and one secret is one key")
    func fileStoreNested() throws {
        let store = try Self.fileStore(Self.document) { .init(secretsFile: $0) }
        #expect(try store.secret("redisPassword", metadata: [:]) == ["redisPassword": "p1"])
        #expect(try store.secret("db:user", metadata: [:]) == ["db:user": "u"])
        #expect(try store.secret("db:tls:ca", metadata: [:]) == ["db:tls:ca": "c"])
        #expect(try store.secret("hosts:1", metadata: [:]) == ["hosts:1": "b"])
        #expect(try store.secret("port", metadata: [:]) == ["port": "6379"])
        #expect(try store.secret("tls", metadata: [:]) == ["tls": "true"])
        #expect(try store.secret("none", metadata: [:]) == ["none": ""])
        #expect(throws: SecretStoreError.notFound("db")) { try store.secret("db", metadata: [:]) }
        let all = try store.bulkSecrets(metadata: [:])
        #expect(all.count == 8)
        #expect(all["db:tls:ca"] == ["db:tls:ca": "c"])
        #expect(store.features.isEmpty)
    }

    @Test("nestedSeparator changes how nested names are joined")
    func fileStoreSeparator() throws {
        let store = try Self.fileStore(Self.document) { .init(secretsFile: $0, nestedSeparator: ".") }
        #expect(try store.secret("db.tls.ca", metadata: [:]) == ["db.tls.ca": "c"])
        #expect(throws: SecretStoreError.self) { try store.secret("db:tls:ca", metadata: [:]) }
    }

    @Test("multiValued makes each top-level key one secret, an object's leaves its keys")
    func fileStoreMultiValued() throws {
        let store = try Self.fileStore(Self.document) { .init(secretsFile: $0, multiValued: true) }
        #expect(try store.secret("db", metadata: [:]) == ["user": "u", "tls:ca": "c"])
        #expect(try store.secret("redisPassword", metadata: [:]) == ["redisPassword": "p1"])
        // As in Dapr, top-level values that are neither strings nor objects are dropped.
        #expect(throws: SecretStoreError.notFound("port")) { try store.secret("port", metadata: [:]) }
        #expect(Set(try store.bulkSecrets(metadata: [:]).keys) == ["db", "redisPassword"])
        #expect(store.features == .multipleKeyValuesPerSecret)
        #expect(store.features.daprNames == ["MULTIPLE_KEY_VALUES_PER_SECRET"])
    }

    @Test("a file that cannot be read or parsed is refused without showing what it holds")
    func fileStoreErrors() throws {
        let missing = try Self.directory() + "/missing.json"
        let error = #expect(throws: SecretStoreError.self) {
            try LocalFileSecretStore(settings: .init(secretsFile: missing))
        }
        #expect(error?.description == "cannot read secretsFile \(missing): no such file")
        let invalid = #expect(throws: SecretStoreError.self) {
            try Self.fileStore(#"{"password": "hunter2-but-broken"#) { .init(secretsFile: $0) }
        }
        #expect(invalid?.description.contains("is not valid JSON") == true)
        #expect(invalid?.description.contains("hunter2") == false)
    }

    @Test("the file store sees its file change")
    func fileStoreSourceChanged() throws {
        let path = try Self.directory() + "/secrets.json"
        try Self.write(#"{"a": "1"}"#, to: path)
        let store = try LocalFileSecretStore(settings: .init(secretsFile: path))
        #expect(!store.sourceChanged())
        try Self.write(#"{"a": "1"}"#, to: path)
        #expect(!store.sourceChanged(), "rewriting the same secrets is no change")
        try Self.write(#"{"a": "2"}"#, to: path)
        #expect(store.sourceChanged())
        try FileManager.default.removeItem(atPath: path)
        #expect(store.sourceChanged())
    }

    @Test("the env store reads <prefix><name>, strips the prefix in bulk, and never gives Dapr's or Hangar's own")
    func envStore() throws {
        let environment = [
            "APP_DB_PASSWORD": "pw", "APP_TOKEN": "t", "APP_": "bare", "OTHER": "o", "DAPR_API_TOKEN": "d",
            "APP_API_TOKEN": "a", "HANGAR_LOG": "h",
        ]
        let store = EnvSecretStore(prefix: "APP_", environment: environment)
        #expect(try store.secret("DB_PASSWORD", metadata: [:]) == ["DB_PASSWORD": "pw"])
        #expect(try store.secret("OTHER", metadata: [:]) == ["OTHER": ""], "outside the prefix: empty, as Dapr")
        #expect(try store.secret("API_TOKEN", metadata: [:]) == ["API_TOKEN": ""], "APP_API_TOKEN is never given")
        #expect(
            try store.bulkSecrets(metadata: [:]) == ["DB_PASSWORD": ["DB_PASSWORD": "pw"], "TOKEN": ["TOKEN": "t"]])

        let all = EnvSecretStore(prefix: "", environment: environment)
        #expect(Set(try all.bulkSecrets(metadata: [:]).keys) == ["APP_DB_PASSWORD", "APP_TOKEN", "APP_", "OTHER"])
        #expect(try all.secret("DAPR_API_TOKEN", metadata: [:]) == ["DAPR_API_TOKEN": ""])
        #expect(try all.secret("HANGAR_LOG", metadata: [:]) == ["HANGAR_LOG": ""])
    }

    @Test("the directory store reads a file per single-key secret and a directory per multi-key secret")
    func directoryStore() throws {
        let root = try Self.directory()
        try Self.write("s3cret", to: root + "/db-password")
        try Self.write("user\n", to: root + "/redis/username")
        try Self.write("pw", to: root + "/redis/password")
        try Self.write("hidden", to: root + "/.hidden")
        let store = try DirectorySecretStore(directory: root)
        #expect(try store.secret("db-password", metadata: [:]) == ["db-password": "s3cret"])
        #expect(try store.secret("redis", metadata: [:]) == ["username": "user\n", "password": "pw"])
        #expect(throws: SecretStoreError.notFound(".hidden")) { try store.secret(".hidden", metadata: [:]) }
        #expect(Set(try store.bulkSecrets(metadata: [:]).keys) == ["db-password", "redis"])
        #expect(!store.sourceChanged())
        #expect(throws: SecretStoreError.self) { try DirectorySecretStore(directory: root + "/missing") }
    }

    /// Lays out one version of a Secret as kubelet does: `..<version>/` holds the files, `..data` links to it, and
    /// each key is a link through `..data`. A later version is swapped in by renaming a new link over `..data`.
    static func kubeletVersion(_ directory: String, _ version: String, _ pairs: [String: String]) throws {
        let manager = FileManager.default
        try manager.createDirectory(atPath: directory + "/.." + version, withIntermediateDirectories: true)
        for (key, value) in pairs { try write(value, to: directory + "/.." + version + "/" + key) }
        try manager.createSymbolicLink(atPath: directory + "/..data_tmp", withDestinationPath: ".." + version)
        #expect(rename(directory + "/..data_tmp", directory + "/..data") == 0)
        for key in pairs.keys where (try? manager.destinationOfSymbolicLink(atPath: directory + "/" + key)) == nil {
            try manager.createSymbolicLink(atPath: directory + "/" + key, withDestinationPath: "..data/" + key)
        }
    }

    @Test("a kubelet-mounted Secret is read through ..data, and a ..data swap is seen as a change")
    func directoryStoreKubeletSwap() throws {
        let root = try Self.directory()
        // One Secret mounted per directory under the store's root, and one mounted as the root of another store.
        try Self.kubeletVersion(root + "/redis", "2024_01_01_v1", ["password": "one", "username": "app"])
        let store = try DirectorySecretStore(directory: root)
        #expect(try store.secret("redis", metadata: [:]) == ["password": "one", "username": "app"])
        #expect(DirectorySecretStore.watchedPaths(root).contains(root + "/redis/..data"))

        try Self.kubeletVersion(root + "/redis", "2024_01_02_v2", ["password": "two", "username": "app"])
        #expect(store.sourceChanged())
        let reopened = try DirectorySecretStore(directory: root)
        #expect(try reopened.secret("redis", metadata: [:]) == ["password": "two", "username": "app"])
        #expect(!reopened.sourceChanged())

        let single = try Self.directory()
        try Self.kubeletVersion(single, "v1", ["password": "p", "token": "t"])
        let flat = try DirectorySecretStore(directory: single)
        #expect(try flat.bulkSecrets(metadata: [:]) == ["password": ["password": "p"], "token": ["token": "t"]])
    }

    @Test("the descriptors take Dapr's metadata names and refuse bad values with the field")
    func descriptors() throws {
        var registry = ComponentRegistry()
        HangarComponents.register(into: &registry)
        #expect(
            throws: ComponentDefinitionError.metadata("secretsFile", "is required by secretstores.local.file")
        ) {
            try registry.check(ComponentDefinition(name: "s", type: "secretstores.local.file"))
        }
        #expect(throws: ComponentDefinitionError.self) {
            try registry.check(ComponentDefinition(name: "s", type: "secretstores.local.directory"))
        }
        let context = ComponentContext(
            dataDirectory: "/data", threadPool: NIOThreadPool.singleton,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        guard case .secretstores(let factory) = LocalFileSecretStore.descriptor.make else {
            Issue.record("not a secret store")
            return
        }
        #expect(throws: ComponentDefinitionError.metadata("multiValued", "must be true or false, not 'maybe'")) {
            _ = try factory(
                ComponentDefinition(
                    name: "s", type: "secretstores.local.file",
                    metadata: ["secretsFile": "/x", "multiValued": "maybe"]), context)
        }
        #expect(LocalFileSecretStore.descriptor.watchedPaths?(["secretsFile": "/x.json"]) == ["/x.json"])
    }
}
