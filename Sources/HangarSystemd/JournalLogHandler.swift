import CSystemd
package import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Logs straight to the systemd journal (`sd_journal_sendv`): the level as the entry's `PRIORITY`, and every
/// metadata value as a field of its own, so `journalctl -u hangard TENANT=team-a` or `-p warning` select entries.
/// The runtime's identity keys get short names: `tenant.namespace` → `TENANT`, `app.id` → `APP`,
/// `component.name` → `COMPONENT`; other keys are upper-cased with `.`/`-` as `_` (`config.path` → `CONFIG_PATH`).
/// `MESSAGE` also carries the metadata as `key=value` pairs, for the default one-line view.
package struct JournalLogHandler: LogHandler {
    package let label: String
    package var logLevel: Logger.Level = .info
    package var metadata: Logger.Metadata = [:]

    package init(label: String) {
        self.label = label
    }

    package subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    package func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let fields = Self.fields(
            level: event.level, message: "\(event.message)", metadata: merged, label: label, file: event.file,
            line: event.line, function: event.function)
        Self.send(fields)
    }

    /// The journal fields of one entry, as `NAME=value` strings.
    package static func fields(
        level: Logger.Level, message: String, metadata: Logger.Metadata, label: String, file: String = #fileID,
        line: UInt = #line, function: String = #function
    ) -> [String] {
        var text = message
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { text += " \(key)=\(value)" }
        var fields = [
            "MESSAGE=\(text)", "PRIORITY=\(priority(level))", "SYSLOG_IDENTIFIER=hangard", "LOGGER=\(label)",
            "CODE_FILE=\(file)", "CODE_LINE=\(line)", "CODE_FUNC=\(function)",
        ]
        var used: Set<String> = ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "LOGGER", "CODE_FILE", "CODE_LINE", "CODE_FUNC"]
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            guard let name = fieldName(key), used.insert(name).inserted else { continue }
            fields.append("\(name)=\(value)")
        }
        return fields
    }

    /// syslog priorities, as the journal wants them.
    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    static let shortNames = ["tenant.namespace": "TENANT", "app.id": "APP", "component.name": "COMPONENT"]

    /// A valid journal field name for a metadata key (A–Z, 0–9 and `_`, not starting with `_` or a digit, at most
    /// 64 characters), or nil when none can be made.
    static func fieldName(_ key: String) -> String? {
        if let short = shortNames[key] { return short }
        var name = ""
        for scalar in key.unicodeScalars {
            switch scalar {
            case "a"..."z": name.unicodeScalars.append(Unicode.Scalar(scalar.value - 32)!)
            case "A"..."Z", "0"..."9": name.unicodeScalars.append(scalar)
            default: name += "_"
            }
        }
        while name.hasPrefix("_") { name.removeFirst() }
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return nil }
        return String(name.prefix(64))
    }

    static func send(_ fields: [String]) {
        let copies = fields.map { strdup($0) }
        defer { for copy in copies { free(copy) } }
        var vectors = copies.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: strlen($0!)) }
        _ = vectors.withUnsafeMutableBufferPointer { buffer in
            sd_journal_sendv(buffer.baseAddress, CInt(buffer.count))
        }
    }
}
