import CSystemd
import Foundation
// Public: this is a swift-log backend.
public import Logging

/// A swift-log backend that writes straight to journald with `sd_journal_sendv`: the message,
/// its priority, `SYSLOG_IDENTIFIER`, the source location, and every metadata key as a field
/// of its own (`request_id` becomes `REQUEST_ID`), so `journalctl REQUEST_ID=…` finds a
/// request's events. A `message_id` metadata value becomes `MESSAGE_ID`. The event's own
/// metadata is also appended to `MESSAGE` as `key=value`, so plain `journalctl` output says
/// which child, request or environment a line is about.
public struct JournaldLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let identifier: String

    /// - Parameter identifier: `SYSLOG_IDENTIFIER`, telling gateway, workers and the
    ///   supervisor apart in the journal.
    public init(identifier: String, level: Logger.Level) {
        self.identifier = identifier
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var entry = JournalEntry()
        Self.fill(&entry, event: event, handlerMetadata: metadata, identifier: identifier)
        entry.send()
    }

    /// Every field of one entry, built into one buffer. An audit line is logged on every call
    /// and every request, so this avoids what the first version did per field: a `String`
    /// per field, a `strdup` each, a merged metadata dictionary and a Unicode upper-casing of
    /// every key.
    static func fill(_ entry: inout JournalEntry, event: LogEvent, handlerMetadata: Logger.Metadata, identifier: String) {
        entry.begin("MESSAGE")
        entry.append(event.message.description)
        if let context = event.metadata {
            for (key, value) in context.sorted(by: { $0.key < $1.key }) where key != "message_id" {
                entry.append(" ")
                entry.append(key)
                entry.append("=")
                entry.append(value.description)
            }
        }
        entry.end()
        entry.field("PRIORITY", String(priority(event.level)))
        entry.field("SYSLOG_IDENTIFIER", identifier)
        entry.field("CODE_FILE", event.file)
        entry.field("CODE_LINE", String(event.line))
        entry.field("CODE_FUNC", event.function)
        // The event's metadata wins a key the logger's also has.
        for (key, value) in event.metadata ?? [:] { metadataField(&entry, key, value) }
        for (key, value) in handlerMetadata where event.metadata?[key] == nil { metadataField(&entry, key, value) }
    }

    private static func metadataField(_ entry: inout JournalEntry, _ key: String, _ value: Logger.MetadataValue) {
        let name = fieldName(key)
        guard !name.isEmpty, name != "MESSAGE", name != "PRIORITY", name != "SYSLOG_IDENTIFIER" else { return }
        entry.field(name, value.description)
    }

    /// journald drops fields whose names are not `A-Z0-9_` or start with `_`.
    static func fieldName(_ key: String) -> String {
        // Our keys are lower-case ASCII, mapped byte by byte; only another key pays for
        // Unicode upper-casing (which can change its length: "ß" becomes "SS").
        let ascii = key.utf8.allSatisfy { $0 < 0x80 }
        var name: [UInt8] = (ascii ? key : key.uppercased()).unicodeScalars.map { scalar in
            switch scalar {
            case "a"..."z": UInt8(scalar.value) - 0x20
            case "A"..."Z", "0"..."9": UInt8(scalar.value)
            default: UInt8(ascii: "_")
            }
        }
        name.removeFirst(name.prefix(while: { $0 == UInt8(ascii: "_") }).count)
        if let first = name.first, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) { name.insert(UInt8(ascii: "F"), at: 0) }
        return String(decoding: name.prefix(64), as: UTF8.self)
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }


    /// True when stderr is connected to journald (systemd sets `$JOURNAL_STREAM` to its
    /// `device:inode`).
    public static var stderrIsJournal: Bool {
        guard let stream = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = stream.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}

/// The fields of one journal entry (`NAME=value` each) in one buffer, sent with one
/// `sd_journal_sendv`.
struct JournalEntry {
    private var bytes: [UInt8] = []
    /// Where each field ends in `bytes`.
    private var ends: [Int] = []

    init() {
        bytes.reserveCapacity(1024)
        ends.reserveCapacity(24)
    }

    mutating func field(_ name: String, _ value: String) {
        begin(name)
        append(value)
        end()
    }

    mutating func begin(_ name: String) {
        bytes += name.utf8
        bytes.append(UInt8(ascii: "="))
    }

    /// A NUL byte would end the field early for some readers of the journal: it is written
    /// as `\x00`, so a hostile value shows what it held.
    mutating func append(_ text: String) {
        guard text.utf8.contains(0) else {
            bytes += text.utf8
            return
        }
        for byte in text.utf8 {
            if byte == 0 { bytes += #"\x00"#.utf8 } else { bytes.append(byte) }
        }
    }

    mutating func end() { ends.append(bytes.count) }

    /// The fields as text (for the tests).
    var fields: [String] {
        var start = 0
        return ends.map { end in
            defer { start = end }
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
    }

    func send() {
        bytes.withUnsafeBytes { buffer in
            var start = 0
            let vectors = ends.map { end -> iovec in
                defer { start = end }
                return iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress! + start), iov_len: end - start)
            }
            _ = sd_journal_sendv(vectors, Int32(vectors.count))
        }
    }
}
