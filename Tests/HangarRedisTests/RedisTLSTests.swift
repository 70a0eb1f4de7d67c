import Foundation
import HangarComponents
import HangarTestSupport
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Testing

@testable import HangarRedis

/// TLS to a real redis-server (Debian's is built with TLS): verified against the CA given, refused when the chain
/// does not verify, and accepted without verification only when asked.
@Suite("Redis over TLS", .serialized)
struct RedisTLSTests {
    let group = MultiThreadedEventLoopGroup.singleton

    /// A server that speaks only TLS, on its usual port, with a certificate from `certificates`' CA.
    func server(_ certificates: TestCertificates) throws -> RedisServer {
        try RedisServer([
            "--tls-port", "PORT", "--port", "0", "--tls-cert-file", certificates.serverCertificate.path,
            "--tls-key-file", certificates.serverKey.path, "--tls-ca-cert-file", certificates.caCertificate.path,
            "--tls-auth-clients", "no",
        ])
    }

    func configuration(port: Int, host: String, _ tls: TLSConfiguration) throws -> RedisConfiguration {
        RedisConfiguration(address: .tcp(host: host, port: port), tls: try RedisTLS(configuration: tls, host: host))
    }

    @Test("a server whose certificate chains to the CA given is used, by name and by address")
    func verified() async throws {
        let certificates = try TestCertificates(in: FileManager.default.temporaryDirectory.appendingPathComponent("hangar-tls-\(UUID())"))
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let server = try server(certificates)
        defer { server.stop() }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.caCertificate.path))
        for host in ["localhost", "127.0.0.1"] {
            let connection = try await RedisConnection.connect(
                try configuration(port: server.port, host: host, tls), on: group.next()
            ).get()
            #expect(try await connection.send(["PING"], deadline: .now() + .seconds(20)).get().string == "PONG")
            _ = try await connection.close().get()
        }
    }

    @Test("a certificate the client does not trust is refused, unless verification is turned off")
    func unverified() async throws {
        let certificates = try TestCertificates(in: FileManager.default.temporaryDirectory.appendingPathComponent("hangar-tls-\(UUID())"))
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let server = try server(certificates)
        defer { server.stop() }
        // The system's roots: the test CA is not among them.
        let strict = TLSConfiguration.makeClientConfiguration()
        await #expect(throws: (any Error).self) {
            _ = try await RedisConnection.connect(
                try configuration(port: server.port, host: "localhost", strict), on: group.next()
            ).get()
        }
        var lax = TLSConfiguration.makeClientConfiguration()
        lax.certificateVerification = .none
        let connection = try await RedisConnection.connect(
            try configuration(port: server.port, host: "localhost", lax), on: group.next()
        ).get()
        #expect(try await connection.send(["PING"], deadline: .now() + .seconds(20)).get().string == "PONG")
        _ = try await connection.close().get()
    }

    @Test("state.redis with enableTLS and caCert from its metadata works against the TLS server; without the CA it stays closed")
    func stateStoreOverTLS() async throws {
        let certificates = try TestCertificates(
            in: FileManager.default.temporaryDirectory.appendingPathComponent("hangar-tls-\(UUID())"))
        defer { try? FileManager.default.removeItem(at: certificates.directory) }
        let server = try server(certificates)
        defer { server.stop() }
        let ca = try String(contentsOf: certificates.caCertificate, encoding: .utf8)
        // readTimeout (each command's deadline) 20 s, not 3: the suite runs at once on two loaded cores in CI.
        let metadata = ["redisHost": "localhost:\(server.port)", "enableTLS": "true", "caCert": ca, "readTimeout": "20s"]
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let store = try RedisStateStore(
            settings: try RedisStateStore.settings(ComponentDefinition(name: "tls", type: "state.redis", metadata: metadata)),
            group: group, logger: logger)
        let loop = group.next()
        try await store.set(StateSetRequest(key: "k", value: Data("over tls".utf8)), on: loop).get()
        #expect(try await store.get("k", on: loop).get()?.value == Data("over tls".utf8))
        try await store.close(on: loop).get()

        var untrusted = metadata
        untrusted["caCert"] = nil
        #expect(throws: (any Error).self) {
            _ = try RedisStateStore(
                settings: try RedisStateStore.settings(
                    ComponentDefinition(name: "tls", type: "state.redis", metadata: untrusted)),
                group: group, logger: logger)
        }
    }
}
