import Foundation

/// A request target split into its path and its query parameters.
struct RequestTarget {
    let path: Substring
    let query: Substring?

    init(_ uri: String) {
        if let mark = uri.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = uri[..<mark]
            query = uri[uri.index(after: mark)...]
        } else {
            path = uri[...]
            query = nil
        }
    }

    /// Every query parameter, names and values percent-decoded (`+` as a space), in order.
    var parameters: [(name: String, value: String)] {
        guard let query else { return [] }
        return query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (part: Substring) in
                let spaced = part.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    func parameter(_ name: String) -> String? {
        parameters.first { $0.name == name }?.value
    }

    /// `metadata.<name>=<value>` parameters, as Dapr passes request metadata over HTTP.
    var metadata: [String: String] {
        var metadata: [String: String] = [:]
        for (name, value) in parameters where name.hasPrefix("metadata.") {
            metadata[String(name.dropFirst("metadata.".count))] = value
        }
        return metadata
    }
}
