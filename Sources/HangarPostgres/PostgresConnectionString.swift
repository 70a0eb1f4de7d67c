import Foundation

/// A PostgreSQL `connectionString` as Dapr (pgx, libpq) reads it: a URL (`postgres://user:secret@host:5432/db?
/// sslmode=disable`, also `postgresql://`) or key=value pairs (`host=localhost port=5432 user=dapr password=secret
/// dbname=state sslmode=disable`, values in single quotes when they hold spaces).
///
/// The password is kept out of every description: `redacted` is what logs and error messages show.
package struct PostgresConnectionString: Sendable, Hashable {
    /// libpq's `sslmode`.
    package enum SSLMode: String, Sendable, Hashable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    /// A host name or address, or a directory holding the server's Unix socket (a value starting with `/`).
    package var host = "localhost"
    package var port = 5432
    package var user = "postgres"
    package var password: String?
    /// The database; nil: the user's name, as libpq does.
    package var database: String?
    /// pgx's default is `prefer`: TLS when the server offers it, without verifying its certificate.
    package var sslMode = SSLMode.prefer
    /// A PEM file of CA certificates (`sslrootcert`), for `verify-ca` and `verify-full`.
    package var sslRootCert: String?
    package var connectTimeout: Duration?

    /// The Unix socket path when `host` is a directory (libpq's `<dir>/.s.PGSQL.<port>`).
    package var unixSocketPath: String? {
        host.hasPrefix("/") ? "\(host)/.s.PGSQL.\(port)" : nil
    }

    /// What may be shown: everything but the password.
    package var redacted: String {
        let target = unixSocketPath ?? "\(host):\(port)"
        return "\(user)@\(target)/\(database ?? user) (sslmode=\(sslMode.rawValue))"
    }

    /// A parse failure; its message never holds the password.
    package struct ParseError: Error, Sendable, CustomStringConvertible {
        package let description: String
    }

    package init(parsing text: String) throws(ParseError) {
        let text = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw ParseError(description: "is empty") }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            try parseURL(text)
        } else {
            for (key, value) in try Self.pairs(text) { try set(key, value) }
        }
    }

    private mutating func parseURL(_ text: String) throws(ParseError) {
        guard let components = URLComponents(string: text) else {
            throw ParseError(description: "is not a valid postgres:// URL")
        }
        if let user = components.user, !user.isEmpty { self.user = user.removingPercentEncoding ?? user }
        if let password = components.password { self.password = password.removingPercentEncoding ?? password }
        if let host = components.host, !host.isEmpty { self.host = host.removingPercentEncoding ?? host }
        if let port = components.port { self.port = port }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        if !path.isEmpty { database = path.removingPercentEncoding ?? path }
        for item in components.queryItems ?? [] {
            try set(item.name, item.value ?? "")
        }
    }

    /// Splits `key=value key='quoted value'` pairs, with `\'` and `\\` escapes inside quotes (libpq's rules).
    private static func pairs(_ text: String) throws(ParseError) -> [(String, String)] {
        var pairs: [(String, String)] = []
        var index = text.startIndex
        func skipSpaces() {
            while index < text.endIndex, text[index].isWhitespace { index = text.index(after: index) }
        }
        while true {
            skipSpaces()
            guard index < text.endIndex else { break }
            let keyStart = index
            while index < text.endIndex, text[index] != "=", !text[index].isWhitespace {
                index = text.index(after: index)
            }
            let key = String(text[keyStart..<index])
            skipSpaces()
            guard index < text.endIndex, text[index] == "=" else {
                throw ParseError(description: "expected key=value pairs or a postgres:// URL near '\(key)'")
            }
            index = text.index(after: index)
            skipSpaces()
            var value = ""
            if index < text.endIndex, text[index] == "'" {
                index = text.index(after: index)
                var closed = false
                while index < text.endIndex {
                    let character = text[index]
                    if character == "\\", text.index(after: index) < text.endIndex {
                        index = text.index(after: index)
                        value.append(text[index])
                    } else if character == "'" {
                        closed = true
                        index = text.index(after: index)
                        break
                    } else {
                        value.append(character)
                    }
                    index = text.index(after: index)
                }
                guard closed else { throw ParseError(description: "unterminated quoted value for '\(key)'") }
            } else {
                while index < text.endIndex, !text[index].isWhitespace {
                    value.append(text[index])
                    index = text.index(after: index)
                }
            }
            pairs.append((key, value))
        }
        return pairs
    }

    private mutating func set(_ key: String, _ value: String) throws(ParseError) {
        switch key {
        case "host", "hostaddr":
            // libpq accepts a list of hosts to try in turn; one server is what a component names here.
            guard !value.contains(",") else { throw ParseError(description: "several hosts are not supported") }
            if !value.isEmpty { host = value }
        case "port":
            guard let port = Int(value), (1...65535).contains(port) else {
                throw ParseError(description: "port '\(value)' is not a port number")
            }
            self.port = port
        case "user": if !value.isEmpty { user = value }
        case "password": password = value
        case "dbname", "database": if !value.isEmpty { database = value }
        case "sslmode":
            guard let mode = SSLMode(rawValue: value) else {
                throw ParseError(
                    description: "sslmode '\(value)' is not one of disable, allow, prefer, require, verify-ca, "
                        + "verify-full")
            }
            sslMode = mode
        case "sslrootcert": sslRootCert = value
        case "connect_timeout":
            guard let seconds = Int(value), seconds >= 0 else {
                throw ParseError(description: "connect_timeout '\(value)' is not a number of seconds")
            }
            connectTimeout = seconds > 0 ? .seconds(seconds) : nil
        case "application_name", "search_path", "pool_max_conns", "pool_min_conns", "pool_max_conn_idle_time",
            "pool_max_conn_lifetime", "pool_health_check_period", "default_query_exec_mode", "sslcert", "sslkey",
            "sslpassword", "target_session_attrs", "client_encoding", "timezone", "TimeZone":
            // Understood by pgx but not acted on here (the pool has its own metadata fields).
            break
        default:
            // pgx sends other names to the server as run-time parameters; they do not change what Hangar stores.
            break
        }
    }
}
