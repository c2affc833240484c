import CSystemd
import Foundation

/// Tells the service manager (systemd, or the supervisor, which gives each child a notify
/// socket of its own) how the process is doing, in `sd_notify`'s datagram protocol. Without
/// `$NOTIFY_SOCKET` every call does nothing, so the same code runs under systemd, under the
/// supervisor and by hand.
public struct ServiceNotifier: Sendable {
    /// The manager's socket, read once: `ProcessInfo.environment` copies the whole
    /// environment on every read, and nothing here changes `$NOTIFY_SOCKET`.
    private let target: String?

    /// - Parameter socket: the manager's socket (a path, or `@name` in the abstract
    ///   namespace); by default `$NOTIFY_SOCKET`.
    public init(socket: String? = nil) {
        let target = socket ?? ProcessInfo.processInfo.environment["NOTIFY_SOCKET"]
        self.target = target?.isEmpty == false ? target : nil
    }

    /// True when a service manager listens.
    public var isSupervised: Bool { target != nil }

    /// Sends `KEY=value` lines; false when nobody listens, or the manager's queue is full, or
    /// the send failed. Callers that must be heard (READY=1) send again on their next tick.
    ///
    /// Written by hand instead of libsystemd's `sd_notify`, which sends on a blocking socket:
    /// a manager that stops reading (a stuck supervisor, a test that read what it waited for)
    /// fills the datagram queue (`net.unix.max_dgram_qlen`, 10 by default) and the next
    /// `sd_notify` blocks its thread for good, past every cancellation and shutdown limit.
    /// Here the send never waits: a full queue drops the message.
    @discardableResult
    public func send(_ assignments: [String]) -> Bool {
        guard let target else { return false }
        // Newlines inside a value would start a new assignment: keep each to one line.
        let state = assignments.map { $0.replacingOccurrences(of: "\n", with: " ") }.joined(separator: "\n")
        return Self.sendDatagram(Array(state.utf8), to: target)
    }

    /// One datagram to an `AF_UNIX` path, or to an abstract address written `@name`.
    private static func sendDatagram(_ bytes: [UInt8], to target: String) -> Bool {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let path = Array(target.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.first == UInt8(ascii: "/") || path.first == UInt8(ascii: "@"), path.count < capacity else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.enumerated() { buffer[index] = byte }
            if path.first == UInt8(ascii: "@") { buffer[0] = 0 }  // the abstract namespace
        }
        // An abstract name's length is exact; a path's includes its terminating zero.
        let length = socklen_t(MemoryLayout<sa_family_t>.size + path.count + (path.first == UInt8(ascii: "@") ? 0 : 1))
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let sent = bytes.withUnsafeBytes { payload in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, payload.baseAddress, payload.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT), $0, length)
                }
            }
        }
        return sent == bytes.count
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
