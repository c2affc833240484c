import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Tells one dnsmasq to re-read its hosts files: SIGHUP to the pid in its pid file, after
/// checking that the pid is a dnsmasq (never every dnsmasq on the host, never whatever
/// process reused a stale pid).
public struct DnsmasqReload: Sendable {
    public let pidFile: String

    public init(pidFile: String) {
        self.pidFile = pidFile
    }

    /// Returns the pid signalled.
    @discardableResult
    public func signal() throws -> Int32 {
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8) else {
            throw DHCPError(code: .signalFailed, message: "cannot read dnsmasq's pid file '\(pidFile)'; is dnsmasq running with --pid-file=\(pidFile)?")
        }
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else {
            throw DHCPError(code: .signalFailed, message: "dnsmasq's pid file '\(pidFile)' holds '\(text.prefix(32))', not a process id")
        }
        let command = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        guard command == "dnsmasq" else {
            throw DHCPError(code: .signalFailed, message: "pid \(pid) from '\(pidFile)' is \(command.map { "'\($0)'" } ?? "not running"), not dnsmasq; not signalling it")
        }
        guard kill(pid, SIGHUP) == 0 else {
            throw DHCPError.syscall(.signalFailed, "kill(\(pid), SIGHUP)", errno, "cannot tell dnsmasq to reload")
        }
        return pid
    }
}
