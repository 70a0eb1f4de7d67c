extension Duration {
    /// The duration in whole milliseconds, rounded towards zero and saturating instead of overflowing.
    var saturatingMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        let (whole, overflow) = seconds.multipliedReportingOverflow(by: 1000)
        if overflow { return seconds < 0 ? .min : .max }
        let (total, overflowAgain) = whole.addingReportingOverflow(attoseconds / 1_000_000_000_000_000)
        if overflowAgain { return whole < 0 ? .min : .max }
        return total
    }
}
