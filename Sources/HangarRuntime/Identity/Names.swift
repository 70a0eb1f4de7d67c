import HangarComponents

/// Validation of the names that make physical keys unambiguous (DESIGN.md, "Identity and sockets").
package enum Names {
    /// The separator of physical state keys; user keys may not contain it. The stores partition their byte
    /// accounting by it, so it is theirs.
    package static let keySeparator = StatePartition.separator

    /// Whether `key` contains `||` (a byte scan: this runs on every state call).
    /// A caller's key or name as error messages quote it: at most 128 characters, so that an error about a huge
    /// key stays well inside what gRPC clients accept in trailers.
    package static func quoted(_ text: String) -> String {
        text.count <= 128 ? "'\(text)'" : "'\(text.prefix(120))…' (\(text.utf8.count) bytes)"
    }

    package static func containsKeySeparator(_ key: String) -> Bool {
        var previousWasBar = false
        for byte in key.utf8 {
            let isBar = byte == UInt8(ascii: "|")
            if isBar && previousWasBar { return true }
            previousWasBar = isBar
        }
        return false
    }

    /// Whether `name` is a DNS-1123 label: 1–63 characters of `a-z`, `0-9` and `-`, starting and ending with an
    /// alphanumeric character.
    package static func isDNS1123Label(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...63).contains(bytes.count) else { return false }
        func alnum(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 48 && c <= 57) }
        guard alnum(bytes.first!), alnum(bytes.last!) else { return false }
        return bytes.allSatisfy { alnum($0) || $0 == 45 }
    }

    /// Why `name` is not a valid DNS-1123 label, or nil when it is.
    package static func dns1123Problem(_ name: String) -> String? {
        if isDNS1123Label(name) { return nil }
        return "'\(name)' is not a DNS-1123 label (1-63 characters of a-z, 0-9 and '-', "
            + "starting and ending with a letter or digit)"
    }
}
