/// The operations of one access-control policy, matched as Dapr's `pkg/config/acl_trie.go` matches them, quirks
/// included, so that a Configuration means the same in Hangar as in Dapr:
/// - an operation is split at `/` into segments, each kept with its leading slash (`/orders/*` is `/orders`, `/*`);
/// - a child is found by the first of a node's children, in the order the operations were written, that is the
///   segment itself, `/**` (any depth from here), `/*` (only as the last segment), or a glob with `*` matching any
///   run of characters within the segment (`/order*`);
/// - a node that carries an action answers as soon as it is reached, except a `/*` node before the last segment;
/// - `/a/*` also matches `/a` itself, but `/*/b` matches nothing but itself (a `/*` is never taken mid-path);
/// - of two operations with the same name, the first one written wins.
struct OperationTrie: Sendable {
    /// The actions of one operation: by HTTP verb (`GET`, `*`, ... as written), and the one for gRPC apps.
    struct Action: Sendable, Hashable {
        var byVerb: [String: String]
        var action: String
    }

    private struct Node: Sendable {
        let segment: String
        var action: Action?
        var children: [Int] = []
    }

    private var nodes: [Node] = [Node(segment: "/", action: nil)]

    init() {}

    /// Adds `operation` (with its leading slash) unless an operation of the same name is already there.
    mutating func insert(_ operation: String, _ action: Action) {
        let parts = operation.split(separator: "/", omittingEmptySubsequences: false)
        var node = 0
        for index in parts.indices.dropFirst() {
            let segment = "/" + parts[index]
            let isLast = index == parts.count - 1
            if let existing = nodes[node].children.first(where: { nodes[$0].segment == segment }) {
                if isLast {
                    if nodes[existing].action == nil { nodes[existing].action = action }
                } else {
                    node = existing
                }
            } else {
                nodes.append(Node(segment: segment, action: isLast ? action : nil))
                nodes[node].children.append(nodes.count - 1)
                node = nodes.count - 1
            }
        }
    }

    /// The action of the operation `operation` (with its leading slash) matches, nil when none does.
    func search(_ operation: String) -> Action? {
        let parts = operation.split(separator: "/", omittingEmptySubsequences: false)
        var node = 0
        for index in parts.indices.dropFirst() {
            let isLast = index == parts.count - 1
            let segment = "/" + parts[index]
            guard let next = child(of: node, matching: segment, isLast: isLast) else { return nil }
            node = next
            if let action = nodes[node].action {
                let single = nodes[node].segment.hasSuffix("/*") && !nodes[node].segment.hasSuffix("/**")
                if !isLast && single { continue }
                return action
            } else if isLast {
                if let wildcard = child(of: node, matching: "/*", isLast: true), let action = nodes[wildcard].action {
                    return action
                }
            }
        }
        return nil
    }

    private func child(of node: Int, matching segment: String, isLast: Bool) -> Int? {
        for child in nodes[node].children {
            let pattern = nodes[child].segment
            if pattern == segment { return child }
            if pattern == "/*" {
                if isLast { return child }
                continue
            }
            if pattern == "/**" { return child }
            if Self.glob(segment, pattern) { return child }
        }
        return nil
    }

    /// Whether `text` matches `pattern`, in which `*` stands for any run of bytes (possibly empty) and every other
    /// byte for itself.
    static func glob(_ text: String, _ pattern: String) -> Bool {
        let text = Array(text.utf8)
        let pattern = Array(pattern.utf8)
        var t = 0
        var p = 0
        // The last `*` seen and the text position it is currently matched up to, to backtrack to.
        var star: (p: Int, t: Int)?
        while t < text.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = (p, t)
                p += 1
            } else if p < pattern.count, pattern[p] == text[t] {
                p += 1
                t += 1
            } else if let last = star {
                p = last.p + 1
                t = last.t + 1
                star = (last.p, last.t + 1)
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
