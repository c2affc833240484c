import CSystemd
import Foundation

/// Tells the service manager (systemd, or the supervisor, which gives each child a notify
/// socket of its own) how the process is doing, through libsystemd's `sd_notify`. Without
/// `$NOTIFY_SOCKET` every call does nothing, so the same code runs under systemd, under the
/// supervisor and by hand.
public struct ServiceNotifier: Sendable {
    public init() {}

    /// True when a service manager listens.
    public var isSupervised: Bool { ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] != nil }

    /// Sends `KEY=value` lines; false when nobody listens or the send failed.
    @discardableResult
    public func send(_ assignments: [String]) -> Bool {
        // Newlines inside a value would start a new assignment: keep each to one line.
        let state = assignments.map { $0.replacingOccurrences(of: "\n", with: " ") }.joined(separator: "\n")
        return sd_notify(0, state) > 0
    }

    @discardableResult public func ready(status: String? = nil) -> Bool { send(["READY=1"] + (status.map { ["STATUS=\($0)"] } ?? [])) }
    @discardableResult public func status(_ line: String) -> Bool { send(["STATUS=\(line)"]) }
    @discardableResult public func watchdog() -> Bool { send(["WATCHDOG=1"]) }
    @discardableResult public func stopping(status: String? = nil) -> Bool { send(["STOPPING=1"] + (status.map { ["STATUS=\($0)"] } ?? [])) }

    /// `RELOADING=1` with the monotonic time systemd wants beside it.
    @discardableResult public func reloading() -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return send(["RELOADING=1", "MONOTONIC_USEC=\(Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000)"])
    }

    /// Asks for more start or stop time (a long journal replay).
    @discardableResult public func extendTimeout(by duration: Duration) -> Bool {
        let (seconds, attoseconds) = duration.components
        return send(["EXTEND_TIMEOUT_USEC=\(seconds * 1_000_000 + attoseconds / 1_000_000_000_000)"])
    }

    /// The watchdog interval the manager expects pings within, or nil when there is none.
    /// (`sd_watchdog_enabled` honours `$WATCHDOG_USEC` only for the process `$WATCHDOG_PID` names.)
    public var watchdogInterval: Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec))
    }
}
