import Foundation
// Public: this module is a swift-log backend.
public import Logging
import Synchronization

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
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let time = Self.timestamp()
        let line: String
        switch format {
        case .text:
            let fields = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.quoteIfNeeded("\($0.value)"))" }
            line = ([time, event.level.rawValue, "\(label):", "\(event.message)"] + fields).joined(separator: " ")
        case .json:
            var object: [String: String] = merged.mapValues { "\($0)" }
            object["time"] = time
            object["level"] = event.level.rawValue
            object["label"] = label
            object["message"] = "\(event.message)"
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        }
        Self.write(line + "\n")
    }

    private static let lock = Mutex(())

    /// One write(2) per line, under a lock, so concurrent entries never interleave.
    private static func write(_ line: String) {
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { Foundation.write(2, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 {
                    if errno == EINTR { continue }
                    return  // stderr is gone; nothing sensible to report it to
                }
                offset += written
            }
            bytes.removeAll()
        }
    }

    private static func timestamp() -> String {
        Date().formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    private static func quoteIfNeeded(_ value: String) -> String {
        value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" })
            ? "\"\(value.replacingOccurrences(of: "\"", with: "\\\""))\"" : value
    }
}
