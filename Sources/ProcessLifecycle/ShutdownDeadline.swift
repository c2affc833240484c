import Foundation
// Public: the deadline is a Service beside the role it bounds, and logs its last line.
public import Logging
public import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The bound on a graceful shutdown: once one begins, the process exits at `limit` whatever
/// is still running. Each role stops in order within its own grace period and normally ends
/// well before; this is the guarantee that a peer that never answers, a stuck task or a bug
/// in a library's shutdown cannot keep a process alive that its manager asked to stop (a
/// process outliving its supervisor would otherwise be an orphan nobody kills).
///
/// It runs on a thread of its own, not on the concurrency pool or an event loop, so a
/// starved or blocked pool cannot delay it. Put it last in the `ServiceGroup`: the group tells
/// its services to stop in reverse order and this one returns at once.
///
/// ```swift
/// ServiceGroup(services: [gateway, reporter, ShutdownDeadline(limit: .seconds(8), role: "gateway", logger: logger)], …)
/// ```
public struct ShutdownDeadline: Service {
    let limit: Duration
    let role: String
    let exitCode: Int32
    let logger: Logger
    let unfinished: @Sendable () -> Logger.Metadata

    /// - Parameters:
    ///   - limit: from the start of the graceful shutdown to the forced exit.
    ///   - role: how the last log line names the process.
    ///   - exitCode: the status of a forced exit (default 70, EX_SOFTWARE: it did not stop as designed).
    ///   - unfinished: what was still going on, for the last log line.
    public init(limit: Duration, role: String, exitCode: Int32 = 70, logger: Logger, unfinished: @escaping @Sendable () -> Logger.Metadata = { [:] }) {
        self.limit = limit
        self.role = role
        self.exitCode = exitCode
        self.logger = logger
        self.unfinished = unfinished
    }

    public func run() async {
        do { try await gracefulShutdown() } catch { return }
        Self.arm(limit: limit, role: role, exitCode: exitCode, logger: logger, unfinished: unfinished)
    }

    /// Starts the countdown now, outside any service group (the supervisor's own stop).
    public static func arm(limit: Duration, role: String, exitCode: Int32 = 70, logger: Logger, unfinished: @escaping @Sendable () -> Logger.Metadata = { [:] }) {
        let seconds = Double(limit.components.seconds) + Double(limit.components.attoseconds) / 1e18
        Thread.detachNewThread {
            Thread.sleep(forTimeInterval: seconds)
            var metadata = unfinished()
            metadata["limit"] = "\(limit)"
            logger.critical("\(role) did not stop within its shutdown limit; exiting now", metadata: metadata)
            _exit(exitCode)
        }
    }
}
