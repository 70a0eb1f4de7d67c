import Foundation

/// A secret token given inline (`<tokenKey>: value`) or in a file (`<fileKey>: path`), as the Tenant kind takes
/// both the app's own API token and the token hangard sends to the app. A relative file path is resolved against
/// the Tenant file's directory; the file's contents, trimmed of surrounding whitespace and the trailing newline,
/// are the token. Errors name the field, never the token.
enum TokenSource {
    /// The token `node` gives under `tokenKey` or `fileKey` (nil when neither is set). Giving both, an unreadable
    /// file or an empty token is an error.
    static func read(
        _ node: YAMLMapping, tokenKey: String, fileKey: String, documentPath: String
    ) throws(ConfigurationError) -> String? {
        let inline = try node.string(tokenKey)
        let file = try node.string(fileKey)
        if inline != nil, file != nil {
            throw node.error(fileKey, "give either \(tokenKey) or \(fileKey), not both")
        }
        var token = inline
        if let file {
            let resolved = resolve(file, documentPath: documentPath)
            guard let contents = try? String(contentsOfFile: resolved, encoding: .utf8) else {
                throw node.error(fileKey, "cannot read '\(resolved)'")
            }
            token = contents.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let token, token.isEmpty {
            throw node.error(file == nil ? tokenKey : fileKey, "the token is empty")
        }
        return token
    }

    /// `path` as an absolute path: relative ones are taken from the directory of `documentPath`.
    static func resolve(_ path: String, documentPath: String) -> String {
        path.hasPrefix("/")
            ? path : ((documentPath as NSString).deletingLastPathComponent as NSString).appendingPathComponent(path)
    }
}
