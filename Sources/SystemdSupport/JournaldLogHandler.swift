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
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let context = (event.metadata ?? [:]).filter { $0.key != "message_id" }.sorted { $0.key < $1.key }
            .map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        var fields = [
            "MESSAGE=\(event.message)\(context.isEmpty ? "" : " " + context)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=\(identifier)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
        ]
        for (key, value) in merged {
            let name = Self.fieldName(key)
            guard !name.isEmpty, !["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER"].contains(name) else { continue }
            fields.append("\(name)=\(value)")
        }
        Self.send(fields)
    }

    /// journald drops fields whose names are not `A-Z0-9_` or start with `_`.
    static func fieldName(_ key: String) -> String {
        var name = String(key.uppercased().unicodeScalars.map { scalar -> Character in
            ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar) ? Character(scalar) : "_"
        })
        while name.hasPrefix("_") { name.removeFirst() }
        if let first = name.first, first.isNumber { name = "F" + name }
        return String(name.prefix(64))
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

    private static func send(_ fields: [String]) {
        // C copies that outlive the call; each is freed afterwards.
        let copies = fields.map { strdup($0) }
        defer { for copy in copies { free(copy) } }
        let vectors = copies.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: $0.map { strlen($0) } ?? 0) }
        _ = sd_journal_sendv(vectors, Int32(vectors.count))
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
