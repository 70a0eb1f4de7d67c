/// Durations as Dapr's Resiliency resources write them (`dapr/kit` `config.Decode`, `resiliency.parseDuration`): a
/// plain integer is milliseconds (`"500"`), anything else is Go's `time.ParseDuration` syntax, a sequence of
/// decimal numbers each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`), optionally signed (`"1h30m"`,
/// `"1.5s"`, `"0"`). Component metadata reads bare integers as seconds instead (HangarComponents' `GoDuration`).
package enum ResiliencyDuration {
    /// The duration `text` denotes, or nil when it is not one.
    package static func parse(_ text: String) -> Duration? {
        if let milliseconds = Int64(text) { return .milliseconds(milliseconds) }
        var scalars = Substring(text).unicodeScalars[...]
        var negative = false
        if let sign = scalars.first, sign == "-" || sign == "+" {
            negative = sign == "-"
            scalars = scalars.dropFirst()
        }
        if String(scalars) == "0" { return .zero }
        guard !scalars.isEmpty else { return nil }
        var nanoseconds = 0.0
        while !scalars.isEmpty {
            let number = scalars.prefix { ("0"..."9").contains($0) || $0 == "." }
            scalars = scalars.dropFirst(number.count)
            // Go wants a digit on at least one side of the point.
            guard number.contains(where: { $0 != "." }), number.filter({ $0 == "." }).count <= 1,
                let value = Double(String(number).hasPrefix(".") ? "0" + String(number) : String(number))
            else { return nil }
            let unit = scalars.prefix { !("0"..."9").contains($0) && $0 != "." }
            scalars = scalars.dropFirst(unit.count)
            guard let scale = units[String(unit)] else { return nil }
            nanoseconds += value * scale
        }
        // Go's limit: about 290 years.
        guard nanoseconds <= Double(Int64.max) else { return nil }
        let duration = Duration.nanoseconds(Int64(nanoseconds))
        return negative ? .zero - duration : duration
    }

    /// Nanoseconds per unit.
    private static let units: [String: Double] = [
        "ns": 1, "us": 1e3, "\u{00B5}s": 1e3, "\u{03BC}s": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9,
    ]

    /// Go's spelling of a duration (`1m30s`, `500ms`), for messages and `/healthz/detail`.
    package static func format(_ duration: Duration) -> String {
        let total = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        if total == 0 { return "0s" }
        if abs(total) < 1_000_000_000 {
            if total % 1_000_000 == 0 { return "\(total / 1_000_000)ms" }
            if total % 1_000 == 0 { return "\(total / 1_000)us" }
            return "\(total)ns"
        }
        var rest = abs(total)
        var text = total < 0 ? "-" : ""
        let hours = rest / 3_600_000_000_000
        rest %= 3_600_000_000_000
        let minutes = rest / 60_000_000_000
        rest %= 60_000_000_000
        if hours > 0 { text += "\(hours)h" }
        if hours > 0 || minutes > 0 { text += "\(minutes)m" }
        let seconds = Double(rest) / 1e9
        text += seconds == seconds.rounded() ? "\(Int64(seconds))s" : "\(seconds)s"
        return text
    }
}
