import Foundation

/// `secretstores.local.directory`: secrets from files under a directory, laid out the way kubelet mounts a
/// Kubernetes Secret volume, Docker and Podman mount `/run/secrets`, or systemd passes `$CREDENTIALS_DIRECTORY`.
///
/// - A file directly under `secretsDirectory` is a secret of one key: `<dir>/db-password` holds `db-password`,
///   whose value is `{"db-password": <content>}`.
/// - A directory under it is a secret of several keys, one file per key: `<dir>/redis/password` is key `password`
///   of secret `redis`. Mount each Kubernetes Secret at `<secretsDirectory>/<secret name>` and a Component's
///   `secretKeyRef: {name: redis, key: password}` reads what it reads on Kubernetes.
///
/// Where a directory holds kubelet's `..data` symlink, its files are read through it, so that one read sees one
/// version of the Secret even while kubelet swaps `..data` to the next; names starting with `.` are never
/// secrets or keys. Contents are given byte for byte (decoded as UTF-8), at most 1 MiB per file (Kubernetes' limit
/// for a whole Secret).
///
/// The files are read when the store opens; `sourceChanged()` reads them again, and the node then replaces the
/// store and re-creates the components whose `secretKeyRef`s it serves.
package struct DirectorySecretStore: SecretStore {
    package let directory: String
    private let secrets: [String: [String: String]]

    /// The most a secret file may hold.
    static let maxFileBytes = 1 << 20

    /// Reads the directory now.
    package init(directory: String) throws(SecretStoreError) {
        self.directory = directory
        self.secrets = try Self.read(directory)
    }

    package var features: SecretStoreFeatures { .multipleKeyValuesPerSecret }

    package func secret(_ name: String, metadata: [String: String]) throws(SecretStoreError) -> [String: String] {
        guard let secret = secrets[name] else { throw .notFound(name) }
        return secret
    }

    package func bulkSecrets(metadata: [String: String]) throws(SecretStoreError) -> [String: [String: String]] {
        secrets
    }

    package func sourceChanged() -> Bool {
        (try? Self.read(directory)) != secrets
    }

    /// The paths the node watches for this store: the directory, its `..data`, and each secret directory's.
    package static func watchedPaths(_ directory: String) -> [String] {
        var paths = [directory, directory + "/..data"]
        for name in names(in: directory) where isDirectory(directory + "/" + name) {
            paths += [directory + "/" + name, directory + "/" + name + "/..data"]
        }
        return paths
    }

    static func read(_ directory: String) throws(SecretStoreError) -> [String: [String: String]] {
        guard isDirectory(directory) else {
            throw .backend("secretsDirectory \(directory) is not a readable directory")
        }
        var secrets: [String: [String: String]] = [:]
        let top = versioned(directory)
        for name in names(in: top) {
            let path = top + "/" + name
            if isDirectory(path) {
                let inner = versioned(path)
                var pairs: [String: String] = [:]
                for key in names(in: inner) where !isDirectory(inner + "/" + key) {
                    pairs[key] = try contents(inner + "/" + key, shown: directory + "/" + name + "/" + key)
                }
                secrets[name] = pairs
            } else {
                secrets[name] = [name: try contents(path, shown: directory + "/" + name)]
            }
        }
        return secrets
    }

    /// The directory to read for `path`: its `..data` when kubelet keeps one there (resolved once, so that every
    /// file comes from the same version), else the directory itself.
    private static func versioned(_ path: String) -> String {
        let data = path + "/..data"
        guard isDirectory(data), let resolved = try? FileManager.default.destinationOfSymbolicLink(atPath: data)
        else { return path }
        return resolved.hasPrefix("/") ? resolved : path + "/" + resolved
    }

    /// The entries of a directory that may be secrets or keys (not hidden), sorted.
    private static func names(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { !$0.hasPrefix(".") }
            .sorted()
    }

    private static func isDirectory(_ path: String) -> Bool {
        var directory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &directory) && directory.boolValue
    }

    /// A file's content; errors name the file as the operator configured it (`shown`), never what it holds.
    private static func contents(_ path: String, shown: String) throws(SecretStoreError) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw .backend("cannot read secret file \(shown)")
        }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maxFileBytes + 1) ?? Data()
        } catch {
            throw .backend("cannot read secret file \(shown)")
        }
        guard data.count <= maxFileBytes else {
            throw .backend("secret file \(shown) is larger than \(maxFileBytes) bytes")
        }
        return String(decoding: data, as: UTF8.self)
    }
}
