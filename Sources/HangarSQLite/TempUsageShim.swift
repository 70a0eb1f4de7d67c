// TEMPORARY until the usage branch merges.
import HangarComponents
extension SQLiteStateStore {
    public var executesInline: Bool { false }
    public var usageByPartition: [String: Int] { [:] }
}
