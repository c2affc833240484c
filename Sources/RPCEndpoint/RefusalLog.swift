public import Logging
import Synchronization

/// Warnings about refused peers, at most one line per peer and kind per interval: a client
/// that knocks 5,000 times with the wrong secret or content type gets a line with a count,
/// not 5,000 lines that bury everything else and trip journald's rate limit.
public final class RefusalLog: Sendable {
    private let logger: Logger
    private let message: Logger.Message
    private let interval: Duration
    private let entries = Mutex<[String: Entry]>([:])

    private struct Entry {
        var loggedAt: ContinuousClock.Instant
        var suppressed: Int
    }

    /// - Parameters:
    ///   - message: the log line, like "refused a stream: wrong API secret".
    ///   - interval: how long a peer's repeats are counted instead of logged. Default 60 s.
    public init(logger: Logger, message: Logger.Message, interval: Duration = .seconds(60)) {
        self.logger = logger
        self.message = message
        self.interval = interval
    }

    /// Records one refusal of `peer` (`ipv4:10.0.0.7:51234`); repeats are counted by `key`,
    /// by default the peer's address without its port.
    public func record(peer: String, key: String? = nil, what: String = "", why: String, now: ContinuousClock.Instant = .now) {
        let host = key ?? Self.host(of: peer)
        let suppressedBefore: Int? = entries.withLock { entries in
            if var entry = entries[host], now - entry.loggedAt < interval {
                entry.suppressed += 1
                entries[host] = entry
                return nil
            }
            let suppressed = entries[host]?.suppressed ?? 0
            entries[host] = Entry(loggedAt: now, suppressed: 0)
            // Bounded: a flood from many addresses cannot grow this without limit.
            if entries.count > 10_000 { entries = entries.filter { now - $0.value.loggedAt < interval } }
            return suppressed
        }
        guard let suppressedBefore else { return }
        var metadata: Logger.Metadata = ["remote_address": "\(peer)", "reason": "\(why)"]
        if !what.isEmpty { metadata["request"] = "\(what)" }
        if suppressedBefore > 0 { metadata["repeats_not_logged"] = "\(suppressedBefore)" }
        metadata["log_interval"] = "\(interval)"
        logger.warning(message, metadata: metadata)
    }

    /// `ipv4:1.2.3.4:56` → `ipv4:1.2.3.4`; `ipv6:[::1]:56` → `ipv6:[::1]`; Unix peers as they are.
    static func host(of peer: String) -> String {
        guard !peer.hasPrefix("unix"), let colon = peer.lastIndex(of: ":"),
              peer[peer.index(after: colon)...].allSatisfy(\.isASCIIDigit) else { return peer }
        return String(peer[..<colon])
    }
}
