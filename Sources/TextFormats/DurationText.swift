import Foundation

/// Durations as operators write them: `500ms`, `2s`, `1.5s`, `5m`, `1h`, `7d`; a bare number
/// is seconds. Shared by the command line and the supervisor's configuration file.
public enum DurationText {
    public static func parse(_ text: String) -> Duration? {
        let units: [(suffix: String, seconds: Double)] = [
            ("ms", 0.001), ("us", 0.000_001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400),
        ]
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        var number = trimmed
        var scale = 1.0
        if let unit = units.first(where: { trimmed.hasSuffix($0.suffix) }) {
            number = String(trimmed.dropLast(unit.suffix.count))
            scale = unit.seconds
        }
        guard let value = Double(number), value >= 0, value.isFinite, value * scale < 1e9 else { return nil }
        return .nanoseconds(Int64(value * scale * 1e9))
    }

    public static let expected = "a duration like 500ms, 10s, 5m, 1h or 7d"

    /// The shortest text `parse` reads back as `duration`: the largest unit that divides it
    /// (`7d`, `90s`, `1500ms`).
    public static func format(_ duration: Duration) -> String {
        let nanoseconds = duration.wholeNanoseconds
        let units: [(suffix: String, nanoseconds: Int64)] = [
            ("d", 86_400_000_000_000), ("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000),
            ("ms", 1_000_000), ("us", 1_000),
        ]
        guard nanoseconds != 0 else { return "0s" }
        for unit in units where nanoseconds % unit.nanoseconds == 0 {
            return "\(nanoseconds / unit.nanoseconds)\(unit.suffix)"
        }
        return "\(Double(nanoseconds) / 1e9)s"
    }
}

extension Duration {
    /// Fractional seconds.
    public var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }

    /// Whole milliseconds, truncated (wire fields, journal times, logs).
    public var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    /// Whole microseconds, truncated (`*_USEC`, latency samples).
    public var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
    }

    /// Whole nanoseconds, truncated.
    public var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
