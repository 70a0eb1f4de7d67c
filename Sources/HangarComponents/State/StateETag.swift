/// The ETag scheme shared by Hangar's own stores: a store-wide, strictly increasing version number written as
/// decimal. Store-wide (not per key) so that a deleted and re-created key never matches an ETag of its past.
package enum StateETag {
    /// The version an ETag names, or nil when it is not one of ours.
    package static func version(_ etag: String) -> UInt64? {
        guard !etag.isEmpty, etag.utf8.count <= 20, etag.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return UInt64(etag)
    }

    package static func string(_ version: UInt64) -> String { String(version) }

    /// Checks a write's concurrency rule against the current ETag of its key (nil when the key does not exist).
    /// Throws `invalidETag` for an ETag that is not ours and `etagMismatch` when the rule refuses the write.
    package static func check(
        key: String, given: String?, concurrency: StateConcurrency, current: String?
    ) throws(StateStoreError) {
        if concurrency == .lastWrite { return }
        if let given, !given.isEmpty {
            guard version(given) != nil else { throw .invalidETag(key: key, etag: given) }
            guard given == current else { throw .etagMismatch(key: key) }
        } else if concurrency == .firstWrite, current != nil {
            throw .etagMismatch(key: key)
        }
    }

    /// Checks a delete: without an ETag it always applies; with one the key must exist with that ETag.
    package static func checkDelete(key: String, given: String?, concurrency: StateConcurrency, current: String?)
        throws(StateStoreError)
    {
        if concurrency == .lastWrite { return }
        guard let given, !given.isEmpty else { return }
        guard version(given) != nil else { throw .invalidETag(key: key, etag: given) }
        guard given == current else { throw .etagMismatch(key: key) }
    }
}
