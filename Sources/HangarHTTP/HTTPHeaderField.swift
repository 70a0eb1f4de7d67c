/// RFC 9110 §5.1 and §5.5 checks for header fields built from stored data, so that nothing a caller stored can
/// split a response (the encoder's own validation is off).
enum HTTPHeaderField {
    /// A token: visible ASCII without delimiters.
    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                byte > 0x20 && byte < 0x7F && !"\"(),/:;<=>?@[\\]{}".utf8.contains(byte)
            }
    }

    /// No control characters other than horizontal tab (so no CR, LF or NUL).
    static func isValidValue(_ value: String) -> Bool {
        value.utf8.allSatisfy { byte in byte == 0x09 || (byte >= 0x20 && byte != 0x7F) }
    }
}
