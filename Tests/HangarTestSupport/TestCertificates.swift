package import Foundation

/// A throwaway certificate authority and a server certificate it signed (for `localhost` and 127.0.0.1), made
/// with the `openssl` command line tool in `directory`: for tests of TLS to real servers.
package struct TestCertificates: Sendable {
    package let directory: URL
    package var caCertificate: URL { directory.appendingPathComponent("ca.crt") }
    package var serverCertificate: URL { directory.appendingPathComponent("server.crt") }
    package var serverKey: URL { directory.appendingPathComponent("server.key") }

    package init(in directory: URL) throws {
        self.directory = directory
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.path
        try Self.run([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Hangar Test CA",
            "-keyout", "\(path)/ca.key", "-out", "\(path)/ca.crt",
        ])
        try Self.run([
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "\(path)/server.key",
            "-out", "\(path)/server.csr",
        ])
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(
            toFile: "\(path)/san.ext", atomically: true, encoding: .utf8)
        try Self.run([
            "x509", "-req", "-in", "\(path)/server.csr", "-CA", "\(path)/ca.crt", "-CAkey", "\(path)/ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "\(path)/san.ext", "-out", "\(path)/server.crt",
        ])
    }

    /// Runs `openssl` with `arguments` (`TestProcess`: posix_spawn and waitpid, as `RedisServer` starts its server).
    private static func run(_ arguments: [String]) throws {
        guard
            let binary = ["/usr/bin/openssl", "/usr/local/bin/openssl"].first(where: {
                FileManager.default.isExecutableFile(atPath: $0)
            })
        else { throw TestFailure("openssl is not installed (apt-get install openssl; scripts/test.sh does it)") }
        let exit = try TestProcess.run([binary] + arguments)
        guard exit == 0 else { throw TestFailure("openssl \(arguments.first ?? "") failed (status \(exit))") }
    }
}
