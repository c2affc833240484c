import Logging
import ProcessLifecycle
import ServiceLifecycle
import Supervision
import UnixSignals

/// The `ServiceGroup` a long-running role (gateway, worker) runs in: SIGTERM or SIGINT stop
/// it gracefully and a second one stops it at once; under the supervisor, end-of-file on
/// stdin stops it too; and the whole stop is bounded by `shutdownLimit`, after which the
/// process exits whatever still runs.
func runRoleGroup(
    _ services: [any Service],
    role: String,
    lifeline: Bool,
    shutdownLimit: Duration,
    logger: Logger,
    unfinished: @escaping @Sendable () -> Logger.Metadata = { [:] }
) async throws {
    var configured = services.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
    if lifeline {
        configured.append(.init(service: StdinLifeline(), successTerminationBehavior: .gracefullyShutdownGroup))
    }
    // Last, so the group tells it first; it returns at once and must not end the group.
    configured.append(.init(
        service: ShutdownDeadline(limit: shutdownLimit, role: role, logger: logger, unfinished: unfinished),
        successTerminationBehavior: .ignore
    ))
    let group = ServiceGroup(configuration: .init(services: configured, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    // ServiceGroup takes a signal either as graceful or as cancelling, not both; the second
    // of them cancels the group from here (every part then stops without waiting).
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        tasks.addTask {
            var signals = 0
            for await _ in await UnixSignalsSequence(trapping: .sigterm, .sigint) {
                signals += 1
                if signals == 2 {
                    logger.notice("second signal: stopping at once")
                    return
                }
            }
        }
        // The group's end, or the second signal, ends both (a cancelled group's own
        // cancellation error is not a failure of the role).
        try await tasks.next()
        tasks.cancelAll()
    }
}
