// TEMPORARY until the usage branch merges.
extension InMemoryStateStore {
    public var executesInline: Bool { true }
    public var usageByPartition: [String: Int] { [:] }
}
