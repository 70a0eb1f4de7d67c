package import HangarComponents
import NIOSSL

extension RedisMetadata {
    /// The TLS metadata, Dapr's names plus one: `enableTLS`, `insecureSkipTLSVerify` (verification is on unless
    /// this is true; Dapr turned it off with `enableTLS` until 2026-03), `clientCert` and `clientKey` (PEM text,
    /// for servers that check clients) and Hangar's `caCert` (PEM text: the authorities to trust instead of the
    /// system's, for a server with a private CA; Dapr has no such field and trusts the system's only).
    package static let tlsFields: [ComponentMetadataField] =
        ["enableTLS", "insecureSkipTLSVerify", "clientCert", "clientKey", "caCert"].map { ComponentMetadataField($0) }

    /// The TLS a component's metadata asks for to reach `host`; nil without `enableTLS`. A certificate or key that
    /// cannot be read is refused now, naming its field (never its content).
    package static func tls(_ metadata: [String: String], host: String) throws(ComponentDefinitionError) -> RedisTLS? {
        let text = { (name: String) in Self.text(metadata, name) }
        let flag = { (name: String) throws(ComponentDefinitionError) in try Self.flag(metadata, name) }
        guard try flag("enableTLS") else {
            for name in ["clientCert", "clientKey", "caCert"] where text(name) != nil {
                throw .metadata(name, "is only used with enableTLS: true")
            }
            return nil
        }
        var configuration = TLSConfiguration.makeClientConfiguration()
        if try flag("insecureSkipTLSVerify") { configuration.certificateVerification = .none }
        if let ca = text("caCert") {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMBytes(Array(ca.utf8)))
            } catch {
                throw .metadata("caCert", "is not a PEM certificate")
            }
        }
        switch (text("clientCert"), text("clientKey")) {
        case (nil, nil): break
        case (let certificate?, let key?):
            do {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMBytes(Array(certificate.utf8)).map {
                    .certificate($0)
                }
            } catch {
                throw .metadata("clientCert", "is not a PEM certificate")
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(bytes: Array(key.utf8), format: .pem))
            } catch {
                throw .metadata("clientKey", "is not a PEM private key")
            }
        case (nil, _): throw .metadata("clientCert", "is required with clientKey")
        case (_, nil): throw .metadata("clientKey", "is required with clientCert")
        }
        do {
            return try RedisTLS(configuration: configuration, host: host)
        } catch {
            throw .metadata("enableTLS", "the TLS settings cannot be used: \(error)")
        }
    }
}
