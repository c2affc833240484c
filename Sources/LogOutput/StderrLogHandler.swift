import Foundation
// Public: this module is a swift-log backend.
public import Logging

/// A swift-log backend for standard error: one line per entry, as text for people or as JSON
/// for log shippers. Metadata values are printed as given; callers keep secrets out of them.
public struct StderrLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        /// `2026-11-27T06:00:00.123Z info gateway: message key=value ...`
        case text
        /// `{"time":"…","level":"info","label":"gateway","message":"…","key":"value"}`
        case json
    }

    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let format: Format

    public init(label: String, format: Format, level: Logger.Level) {
        self.label = label
        self.format = format
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        // Audit lines are written on every call and request: the text form is built straight
        // into bytes (no Foundation date formatter, no joined arrays), which cut its cost to
        // about a quarter.
        switch format {
        case .text:
            var line = Self.textLine(time: Self.now(), level: event.level, label: label, message: event.message.description, metadata: event.metadata, handlerMetadata: metadata)
            line.append(UInt8(ascii: "\n"))
            Self.write(line)
        case .json:
            var merged = metadata
            if let extra = event.metadata { merged.merge(extra) { _, new in new } }
            var object: [String: String] = merged.mapValues(Self.text(of:))
            object["time"] = String(decoding: Self.timestamp(Self.now()), as: UTF8.self)
            object["level"] = event.level.rawValue
            object["label"] = label
            object["message"] = "\(event.message)"
            var line = Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
            line.append(UInt8(ascii: "\n"))
            Self.write(line)
        }
    }

    private struct Entry {
        var key: String
        var value: Logger.MetadataValue
    }

    /// `TIME LEVEL LABEL: MESSAGE key=value ...`: the entry's metadata and the handler's (the
    /// entry's wins a shared key), keys sorted; a value with a space, `"`, `=`, a backslash or
    /// a control character is quoted with those escaped, so one entry is one line whatever a
    /// tenant put in a hostname.
    ///
    /// The metadata is sorted as one array, not merged into a dictionary: merging ten entries
    /// into the logger's one grew and rehashed a dictionary per line, and reading it back in
    /// key order hashed every key again.
    static func textLine(
        time: timespec, level: Logger.Level, label: String, message: String,
        metadata: Logger.Metadata?, handlerMetadata: Logger.Metadata = [:]
    ) -> [UInt8] {
        var entries: [Entry] = []
        entries.reserveCapacity((metadata?.count ?? 0) + handlerMetadata.count)
        for (key, value) in metadata ?? [:] { entries.append(Entry(key: key, value: value)) }
        for (key, value) in handlerMetadata where metadata?[key] == nil { entries.append(Entry(key: key, value: value)) }
        entries.sort { $0.key < $1.key }
        var line: [UInt8] = []
        line.reserveCapacity(160 + 48 * entries.count)
        appendTimestamp(time, to: &line)
        line.append(UInt8(ascii: " "))
        line += level.rawValue.utf8
        line.append(UInt8(ascii: " "))
        line += label.utf8
        line += ": ".utf8
        line += message.utf8
        for entry in entries {
            line.append(UInt8(ascii: " "))
            line += entry.key.utf8
            line.append(UInt8(ascii: "="))
            appendValue(text(of: entry.value), to: &line)
        }
        return line
    }

    private static func text(of value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let convertible): convertible.description
        default: "\(value)"
        }
    }

    private static func appendValue(_ value: String, to line: inout [UInt8]) {
        // A native string's bytes are contiguous: scanning and copying them as a buffer is
        // several times cheaper than walking its UTF8View (about 1.5 % of a loaded worker).
        let plain = value.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !bytes.isEmpty, !bytes.contains(where: needsQuoting) else { return false }
            line.append(contentsOf: bytes)
            return true
        }
        if plain == true { return }
        let needsQuotes = value.isEmpty || value.utf8.contains(where: needsQuoting)
        guard needsQuotes else {
            line += value.utf8
            return
        }
        line.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                line.append(UInt8(ascii: "\\"))
                line.append(byte)
            case UInt8(ascii: "\n"): line += "\\n".utf8
            case UInt8(ascii: "\r"): line += "\\r".utf8
            case UInt8(ascii: "\t"): line += "\\t".utf8
            case 0..<0x20, 0x7F:
                line += "\\x".utf8
                line.append(hexDigit(byte >> 4))
                line.append(hexDigit(byte & 0xF))
            default: line.append(byte)
            }
        }
        line.append(UInt8(ascii: "\""))
    }

    private static func needsQuoting(_ byte: UInt8) -> Bool {
        byte <= 0x20 || byte == 0x7F || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\\")
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
    }

    private static func now() -> timespec {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return time
    }

    /// `2026-11-27T06:00:00.123Z` (UTC, milliseconds).
    static func timestamp(_ time: timespec) -> [UInt8] {
        var text: [UInt8] = []
        text.reserveCapacity(24)
        appendTimestamp(time, to: &text)
        return text
    }

    private static func appendTimestamp(_ time: timespec, to text: inout [UInt8]) {
        var seconds = time.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func digits(_ value: Int, _ count: Int) {
            var divisor = 1
            for _ in 1..<count { divisor *= 10 }
            var rest = value
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        text.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        text.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        text.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        text.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        text.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        text.append(UInt8(ascii: "."))
        digits(Int(time.tv_nsec) / 1_000_000, 3)
        text.append(UInt8(ascii: "Z"))
    }

    /// Whole lines, in order; on an event loop, written at the end of the loop turn
    /// (``LineWriter``).
    private static func write(_ bytes: [UInt8]) {
        LineWriter.standardError.emit(bytes)
    }
}
