import Foundation
import Logging
// Public: the reporter is a Service beside the role it reports on.
public import ServiceLifecycle

/// Reports a role to its service manager: `READY=1` once `ready` returns, a `STATUS=` line
/// whenever it changes, `WATCHDOG=1` at half the manager's watchdog interval for as long as
/// the process runs (a stuck process stops pinging, and the manager acts), and `STOPPING=1`
/// on graceful shutdown. Between `serving` and `ready` (a journal replay) it asks for more
/// start time with `EXTEND_TIMEOUT_USEC=` and says why in `STATUS=`.
public struct NotifyReporter: Service {
    private let notifier: ServiceNotifier
    private let serving: (@Sendable () async -> Void)?
    private let ready: @Sendable () async -> Void
    private let status: @Sendable () -> String
    private let statusInterval: Duration
    private let startupExtension: Duration
    private let alive: @Sendable () -> Bool

    /// - Parameters:
    ///   - serving: returns once the role serves but still prepares (listening, replaying);
    ///     nil when there is no such phase.
    ///   - ready: returns once the role is ready (listening, recovered, registered…).
    ///   - status: the current one-line status.
    ///   - alive: false withholds `WATCHDOG=1` (default: always alive).
    public init(
        notifier: ServiceNotifier = ServiceNotifier(),
        statusInterval: Duration = .seconds(1),
        startupExtension: Duration = .seconds(15),
        serving: (@Sendable () async -> Void)? = nil,
        ready: @escaping @Sendable () async -> Void,
        status: @escaping @Sendable () -> String,
        alive: @escaping @Sendable () -> Bool = { true }
    ) {
        self.alive = alive
        self.notifier = notifier
        self.statusInterval = statusInterval
        self.startupExtension = startupExtension
        self.serving = serving
        self.ready = ready
        self.status = status
    }

    public func run() async throws {
        guard notifier.isSupervised else {
            try? await gracefulShutdown()
            return
        }
        let watchdog = notifier.watchdogInterval.map { $0 / 2 }
        await withTaskGroup(of: Void.self) { group in
            if let watchdog {
                // Pings from the start: a slow start must not look like a hang.
                group.addTask {
                    while !Task.isCancelled {
                        // A role that cannot do its work (a corrupt journal) stops pinging, so
                        // its manager restarts it instead of trusting a "ready" that fails.
                        if alive() { notifier.watchdog() }
                        try? await Task.sleep(for: watchdog)
                    }
                }
            }
            group.addTask {
                if let serving {
                    await serving()
                    await withTaskGroup(of: Void.self) { startup in
                        startup.addTask { await ready() }
                        // Each extension covers three intervals; READY=1 ends them.
                        startup.addTask {
                            while !Task.isCancelled {
                                notifier.extendTimeout(by: startupExtension)
                                notifier.status(status())
                                try? await Task.sleep(for: startupExtension / 3)
                            }
                        }
                        await startup.next()
                        startup.cancelAll()
                    }
                } else {
                    await ready()
                }
                // Cancelled while waiting (shutdown before ready): say nothing.
                if Task.isCancelled { return }
                // A message the manager's full queue dropped is sent again on the next tick.
                var last = status()
                var readySent = notifier.ready(status: last)
                while !Task.isCancelled {
                    try? await Task.sleep(for: statusInterval)
                    let current = status()
                    if !readySent {
                        readySent = notifier.ready(status: current)
                        last = current
                    } else if current != last, notifier.status(current) {
                        last = current
                    }
                }
            }
            try? await gracefulShutdown()
            notifier.stopping(status: "stopping")
            group.cancelAll()
        }
    }
}
