import Foundation
import Synchronization

/// The envelope's `time` and `expiration`, written as Go's `time.Format(time.RFC3339)` writes them: whole seconds
/// (truncated), `Z` for UTC, else `±hh:mm`. The local zone's offset is asked of Foundation once per second, not
/// once per publish (`TimeZone.current` and `secondsFromGMT(for:)` take locks and walk the zone's rules).
enum EnvelopeClock {
    /// The last offset looked up for the current zone, and the second it holds for: `second << 18 | (offset +
    /// 2^17)` (an offset is within ±18 h, well inside 17 bits); -1 before the first lookup.
    private static let cachedOffset = Atomic<Int>(-1)

    /// The offset from UTC, in seconds, of `zone` at `date`; nil `zone` is the process's current zone.
    static func offset(of zone: TimeZone?, at date: Date) -> Int {
        if let zone { return zone.secondsFromGMT(for: date) }
        let second = Int(date.timeIntervalSince1970.rounded(.down))
        guard second >= 0, second < 1 << 44 else { return TimeZone.current.secondsFromGMT(for: date) }
        let cached = cachedOffset.load(ordering: .relaxed)
        if cached >= 0, cached >> 18 == second { return (cached & (1 << 18 - 1)) - 1 << 17 }
        let offset = TimeZone.current.secondsFromGMT(for: date)
        if abs(offset) < 1 << 17 { cachedOffset.store(second << 18 | (offset + 1 << 17), ordering: .relaxed) }
        return offset
    }

    /// Writes `date` in RFC 3339 at `offset` seconds from UTC (0: `Z`).
    static func writeRFC3339(_ date: Date, offset: Int, into out: inout [UInt8]) {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let local = seconds + offset
        var days = local / 86_400
        var secondOfDay = local % 86_400
        if secondOfDay < 0 {
            secondOfDay += 86_400
            days -= 1
        }
        // Howard Hinnant's civil_from_days.
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        writeYear(year, into: &out)
        out.append(UInt8(ascii: "-"))
        writeTwo(month, into: &out)
        out.append(UInt8(ascii: "-"))
        writeTwo(day, into: &out)
        out.append(UInt8(ascii: "T"))
        writeTwo(secondOfDay / 3600, into: &out)
        out.append(UInt8(ascii: ":"))
        writeTwo(secondOfDay / 60 % 60, into: &out)
        out.append(UInt8(ascii: ":"))
        writeTwo(secondOfDay % 60, into: &out)
        if offset == 0 {
            out.append(UInt8(ascii: "Z"))
        } else {
            let minutes = abs(offset) / 60
            out.append(UInt8(ascii: offset < 0 ? "-" : "+"))
            writeTwo(minutes / 60, into: &out)
            out.append(UInt8(ascii: ":"))
            writeTwo(minutes % 60, into: &out)
        }
    }

    /// Two digits, or as many as a larger value has (as `"\(value)"` past 99).
    private static func writeTwo(_ value: Int, into out: inout [UInt8]) {
        if value >= 0, value < 100 {
            out.append(UInt8(truncatingIfNeeded: 0x30 + value / 10))
            out.append(UInt8(truncatingIfNeeded: 0x30 + value % 10))
        } else {
            out.append(contentsOf: String(value).utf8)
        }
    }

    /// The year as Swift prints an `Int` (four digits for every year a clock gives).
    private static func writeYear(_ year: Int, into out: inout [UInt8]) {
        if year >= 1000, year <= 9999 {
            for divisor in [1000, 100, 10, 1] { out.append(UInt8(truncatingIfNeeded: 0x30 + year / divisor % 10)) }
        } else {
            out.append(contentsOf: String(year).utf8)
        }
    }
}
