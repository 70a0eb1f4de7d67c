import Foundation

/// How `pubsub.sqlite` stores a message's metadata map in one blob: for each entry, sorted by key, the key's and
/// the value's UTF-8 lengths (4 bytes, little-endian) each followed by the bytes. No metadata is an empty blob, the
/// common case, which costs nothing to write or read.
enum PubSubMetadataCoding {
    static func encode(_ metadata: [String: String]) -> Data {
        guard !metadata.isEmpty else { return Data() }
        var data = Data()
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            append(key, to: &data)
            append(value, to: &data)
        }
        return data
    }

    /// The map back from a blob `encode` wrote; nil when the blob is malformed.
    static func decode(_ data: Data) -> [String: String]? {
        guard !data.isEmpty else { return [:] }
        var metadata: [String: String] = [:]
        var offset = data.startIndex
        func string() -> String? {
            guard data.endIndex - offset >= 4 else { return nil }
            var length = 0
            for index in 0..<4 { length |= Int(data[offset + index]) << (8 * index) }
            offset += 4
            guard data.endIndex - offset >= length else { return nil }
            defer { offset += length }
            return String(decoding: data[offset..<(offset + length)], as: UTF8.self)
        }
        while offset < data.endIndex {
            guard let key = string(), let value = string() else { return nil }
            metadata[key] = value
        }
        return metadata
    }

    private static func append(_ string: String, to data: inout Data) {
        let count = UInt32(string.utf8.count)
        withUnsafeBytes(of: count.littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: string.utf8)
    }
}
