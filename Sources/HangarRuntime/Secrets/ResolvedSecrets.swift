/// What a component's `secretKeyRef`s resolved to when its pool was made (`ComponentHost`), or why they did not.
/// Kept by the pool: the node re-resolves on every reconfiguration and re-creates the component when this changes,
/// and the pool redacts the values from everything it shows (health, errors, its component's log).
package enum ResolvedSecrets: Sendable, Hashable {
    /// The component has no `secretKeyRef`.
    case none
    /// Each `secretKeyRef`'d metadata name and its value.
    case values([String: String])
    /// A reference that did not resolve: the component stays DOWN with this error, which names the store, the
    /// secret and the key, never a value.
    case failed(String)

    /// What replaces a secret's value in text the node shows.
    package static let mask = "[redacted]"

    /// `text` with every resolved value replaced by `mask` (longer values first, so that a value containing
    /// another is masked whole).
    package func redact(_ text: String) -> String {
        guard case .values(let values) = self else { return text }
        var text = text
        for value in Set(values.values).sorted(by: { $0.count > $1.count }) where !value.isEmpty {
            text = text.replacingOccurrences(of: value, with: Self.mask)
        }
        return text
    }
}
