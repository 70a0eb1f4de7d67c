/// How long and how much a pub/sub component keeps, and how long a lease lasts: the metadata both embedded
/// components share, under the same names and with the same meaning (see `PubSub` for what retention forces).
package struct PubSubLimits: Sendable, Hashable {
    /// `ackTimeout` (alias `visibilityTimeout`): how long a fetched message stays leased when `fetch` names no
    /// lease; unacknowledged by then, it is delivered again. Default 60 s (pubsub.redis's `processingTimeout`).
    package var ackTimeout: Duration
    /// `retentionPeriod`: messages older than this are removed by `trim`, acknowledged or not. Nil (`0`): kept
    /// until every consumer has acknowledged them. Default 24 h.
    package var retentionPeriod: Duration?
    /// `maxTopicBytes`: the most bytes one topic holds. When a publish takes a topic above it, the topic's oldest
    /// messages are removed in the same commit, acknowledged or not, until it is back under; a publish larger than
    /// the limit by itself is refused (`PubSubError.tooLarge`). So no commit ever leaves a topic above it. Nil: no
    /// per-topic limit (the default).
    package var maxTopicBytes: Int?
    /// `maxRetainedBytes`: the most bytes the whole component holds; a publish that would exceed it (after `trim`
    /// removed what it could) fails with `PubSubError.full`, one larger than it by itself with `.tooLarge`. Checked
    /// in the component's commit order, so concurrent publishes cannot overshoot it. Nil: no limit.
    package var maxRetainedBytes: Int?
    /// `cleanupInterval`: how often `trim` runs by itself. Nil (`0`): never (callers run it). Default 10 s.
    package var cleanupInterval: Duration?
    /// Not metadata: how often a full component may trim for a refused publish when no consumer has acknowledged
    /// anything since its last trim (only TTLs and age can have freed room). See `PubSubTrimGate`. Default 1 s.
    package var fullTrimInterval: Duration

    package init(
        ackTimeout: Duration = .seconds(60), retentionPeriod: Duration? = .seconds(24 * 3600),
        maxTopicBytes: Int? = nil, maxRetainedBytes: Int? = nil, cleanupInterval: Duration? = .seconds(10),
        fullTrimInterval: Duration = .seconds(1)
    ) {
        self.ackTimeout = ackTimeout
        self.retentionPeriod = retentionPeriod
        self.maxTopicBytes = maxTopicBytes
        self.maxRetainedBytes = maxRetainedBytes
        self.cleanupInterval = cleanupInterval
        self.fullTrimInterval = fullTrimInterval
    }

    /// Why `bytes` published at once could never be stored under these limits (the error to answer), or nil.
    package func refusalOfSize(_ bytes: Int) -> PubSubError? {
        if let limit = maxTopicBytes, bytes > limit {
            return .tooLarge(bytes: bytes, limit: limit, setting: "maxTopicBytes")
        }
        if let limit = maxRetainedBytes, bytes > limit {
            return .tooLarge(bytes: bytes, limit: limit, setting: "maxRetainedBytes")
        }
        return nil
    }

    /// The metadata names `init(metadata:defaults:)` reads.
    package static let metadataFields = [
        "ackTimeout", "visibilityTimeout", "retentionPeriod", "maxTopicBytes", "maxRetainedBytes", "cleanupInterval",
    ].map { ComponentMetadataField($0) }

    /// Reads the limits from a component's metadata over `defaults`. Durations are Go durations (`500ms`, `1h`) or
    /// whole seconds; sizes are bytes, with an optional `Ki`/`Mi`/`Gi` (or `k`/`M`/`G`) suffix; `0` turns an
    /// optional limit off. A bad value is refused naming its field.
    package init(metadata: [String: String], defaults: PubSubLimits) throws(ComponentDefinitionError) {
        self = defaults
        func text(_ name: String) -> String? {
            guard let text = metadata[name]?.trimmingCharacters(in: .whitespaces), !text.isEmpty else { return nil }
            return text
        }
        func duration(_ name: String) throws(ComponentDefinitionError) -> Duration? {
            guard let text = text(name) else { return nil }
            guard let value = GoDuration.parse(text), value >= .zero else {
                throw .metadata(name, "'\(text)' is not a duration (e.g. 30s, 500ms, 24h)")
            }
            return value
        }
        func bytes(_ name: String) throws(ComponentDefinitionError) -> Int? {
            guard let text = text(name) else { return nil }
            guard let value = Self.parseBytes(text) else {
                throw .metadata(name, "'\(text)' is not a size in bytes (e.g. 1048576, 64Mi, 1Gi)")
            }
            return value
        }
        for name in ["ackTimeout", "visibilityTimeout"] {
            guard let value = try duration(name) else { continue }
            guard value > .zero else { throw .metadata(name, "must be positive") }
            ackTimeout = value
        }
        if let value = try duration("retentionPeriod") { retentionPeriod = value > .zero ? value : nil }
        if let value = try duration("cleanupInterval") { cleanupInterval = value > .zero ? value : nil }
        if let value = try bytes("maxTopicBytes") { maxTopicBytes = value > 0 ? value : nil }
        if let value = try bytes("maxRetainedBytes") { maxRetainedBytes = value > 0 ? value : nil }
    }

    /// A byte size: digits with an optional binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`)
    /// suffix, as Kubernetes quantities write them; nil when malformed or too large.
    static func parseBytes(_ text: String) -> Int? {
        let suffixes: [(String, Int)] = [
            ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
            ("k", 1000), ("K", 1000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
        ]
        var digits = Substring(text)
        var scale = 1
        if let (suffix, factor) = suffixes.first(where: { text.hasSuffix($0.0) }) {
            digits = digits.dropLast(suffix.count)
            scale = factor
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
            let value = Int(digits)
        else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : product
    }
}

import Foundation
