import Logging

/// A log handler that masks secret values (`ResolvedSecrets.redact`) in the message, the metadata and the error
/// of every event before its inner handler sees it: the logger a component gets when its metadata holds resolved
/// secrets, so that a component that logs its configuration (a path, a connection string) never logs them.
struct RedactingLogHandler: LogHandler {
    var inner: any LogHandler
    let secrets: ResolvedSecrets

    var logLevel: Logger.Level {
        get { inner.logLevel }
        set { inner.logLevel = newValue }
    }

    var metadata: Logger.Metadata {
        get { inner.metadata }
        set { inner.metadata = newValue }
    }

    var metadataProvider: Logger.MetadataProvider? {
        get { inner.metadataProvider }
        set { inner.metadataProvider = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { inner[metadataKey: key] }
        set { inner[metadataKey: key] = newValue }
    }

    func log(event: LogEvent) {
        var event = event
        event.message = "\(secrets.redact(event.message.description))"
        var metadata = (inner.metadata).merging(event.metadata ?? [:]) { _, new in new }
        if let error = event.error {
            metadata["error"] = metadata["error"] ?? .string("\(error)")
            event.error = nil
        }
        event.metadata = metadata.isEmpty ? nil : metadata.mapValues(redact)
        inner.log(event: event)
    }

    private func redact(_ value: Logger.MetadataValue) -> Logger.MetadataValue {
        switch value {
        case .string(let text): .string(secrets.redact(text))
        case .stringConvertible(let value): .string(secrets.redact(value.description))
        case .dictionary(let dictionary): .dictionary(dictionary.mapValues(redact))
        case .array(let array): .array(array.map(redact))
        }
    }

    /// A logger like `logger` whose events are redacted.
    static func wrapping(_ logger: Logger, secrets: ResolvedSecrets) -> Logger {
        Logger(label: logger.label) { _ in RedactingLogHandler(inner: logger.handler, secrets: secrets) }
    }
}
