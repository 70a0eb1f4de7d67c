/// Parses durations as Dapr's metadata writes them (Go's `time.ParseDuration`: `500ms`, `2s`, `1h30m`), and bare
/// integers as seconds.
package enum GoDuration {
    package static func parse(_ text: String) -> Duration? {
        let text = text.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(text) { return .seconds(seconds) }
        var total: Double = 0
        var rest = Substring(text)
        guard !rest.isEmpty else { return nil }
        let units: [(String, Double)] = [
            ("ns", 1e-9), ("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1), ("m", 60), ("h", 3600),
        ]
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard !number.isEmpty, let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard
                let (unit, scale) = units.first(where: {
                    rest.hasPrefix($0.0) && !(($0.0 == "m") && rest.hasPrefix("ms"))
                })
            else { return nil }
            rest = rest.dropFirst(unit.count)
            total += value * scale
        }
        return .milliseconds(Int64((total * 1000).rounded()))
    }
}

import Foundation
