import ArgumentParser
import Foundation
import GatewayProtocol
import TextFormats

/// A duration on the command line: `500ms`, `2s`, `1.5s`, `5m`, `1h`, `7d`; a bare number is
/// seconds.
struct DurationArgument: ExpressibleByArgument, Sendable, CustomStringConvertible {
    let duration: Duration
    let text: String

    init(_ duration: Duration, text: String) {
        self.duration = duration
        self.text = text
    }

    init?(argument: String) {
        guard let duration = DurationText.parse(argument) else { return nil }
        self.init(duration, text: argument.trimmingCharacters(in: .whitespaces))
    }

    var description: String { text }

    /// Whole milliseconds, for journal times.
    var totalMilliseconds: Int64 { duration.wholeMilliseconds }

    /// Whole milliseconds, as the admin API's `timeout_ms` takes them.
    var milliseconds: UInt32 { UInt32(clamping: duration.wholeMilliseconds) }

    static var defaultCompletionKind: CompletionKind { .default }
}

extension DurationArgument {
    /// For flags that must be positive.
    func requirePositive(_ flag: String) throws -> Duration {
        guard duration > .zero else {
            throw ValidationError("\(flag) must be positive, got '\(text)'")
        }
        return duration
    }
}
