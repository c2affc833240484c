import AsyncPrimitives
import Foundation
// Public: the supervisor logs through swift-log.
public import Logging
import ProcessLifecycle
import ServiceLifecycle
import Subprocess
import Synchronization
// Public: the supervisor is given the notifier it reports through.
public import SystemdSupport
public import Telemetry
import TextFormats
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// The main process of the one-box install: runs the gateway and one worker per environment
/// as children, restarts them after OTP's rules, watches their notify sockets, and reports
/// to systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING). SIGHUP re-reads the
/// configuration and adds or removes workers without touching the others; SIGTERM/SIGINT
/// stop workers, then the gateway, and return.
public final class Supervisor: Sendable {
    public struct Options: Sendable {
        public var configurationPath: String
        /// The `vps-gateway` binary the children run.
        public var executable: String
        /// The supervisor's own environment (seed overrides, systemd's variables).
        public var variables: [String: String]
        public var hostName: String

        public init(configurationPath: String, executable: String, variables: [String: String], hostName: String) {
            self.configurationPath = configurationPath
            self.executable = executable
            self.variables = variables
            self.hostName = hostName
        }
    }

    private typealias Machine = SupervisorMachine

    private let options: Options
    private let logger: Logger
    private let notifier: ServiceNotifier
    private let configuration: SupervisorConfiguration
    /// Restarts and up/down per child; nil records nothing.
    private let metrics: MetricsRegistry?
    /// The current run of each child, for signals and for what a stop that outlives its
    /// limit names as still running.
    private let processes = Mutex<[Machine.ChildID: ChildProcess]>([:])
    /// The supervisor's concurrent parts still running, by name: what a stop that outlives
    /// its limit names as unfinished.
    private let runningParts = Mutex<[String: Int]>([:])
    /// A child that floods its notify socket cannot grow the event queue.
    private let notifyBacklog = Mutex(NotifyBacklog<Machine.ChildID>(limit: 1024))

    public init(options: Options, logger: Logger, notifier: ServiceNotifier = ServiceNotifier(), metrics: MetricsRegistry? = nil) throws {
        self.options = options
        self.metrics = metrics
        self.logger = logger
        self.notifier = notifier
        let configuration = try SupervisorConfiguration.load(path: options.configurationPath)
        // Fails early on a missing secret or bad override.
        _ = try configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName)
        self.configuration = configuration
    }

    /// Runs until SIGTERM/SIGINT (returns), or until the gateway, or a worker with `escalate`
    /// set, is given up (throws).
    ///
    /// One loop: every event (signals, child starts and exits, notify messages, timers, a
    /// reloaded file) goes through one queue to ``SupervisorMachine``, and this loop carries
    /// out the actions it returns. The tasks around it only turn the outside into events.
    public func run() async throws {
        // Before any socket is touched: a second supervisor on this configuration must not
        // replace the first one's notify sockets.
        let lock = try lockNotifyDirectory()
        defer { withExtendedLifetime(lock) {} }
        let specs = try configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName)
        var machine = Machine(
            configuration: configuration, specs: specs, configurationPath: options.configurationPath,
            systemdWatchdog: notifier.watchdogInterval.map { $0 / 2 }
        )
        let events = MessageQueue<Machine.Event>(capacity: Int.max)
        var escalation: SupervisorError?
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.part("signals") {
                    for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup) {
                        events.enqueue(signal == .sighup ? .reload : .terminate)
                    }
                }
            }
            var effects = Effects()
            var actions = machine.start(now: .now)
            loop: while true {
                for action in actions {
                    if case .finish(let error) = action {
                        escalation = error
                        break loop
                    }
                    perform(action, effects: &effects, events: events, group: &group)
                }
                guard let batch = await events.nextBatch() else { break }
                actions = []
                for event in batch {
                    switch event {
                    case .timer(let timer): effects.timers[timer] = nil
                    case .exited(let id, _, _): processes.withLock { $0[id] = nil }
                    case .notified(let id, _): handledNotification(of: id)
                    default: break
                    }
                    actions += machine.handle(event, now: .now)
                }
            }
            for timer in effects.timers.values { _ = timer.cancel() }
            for socket in effects.notifySockets.values { socket.finish() }
            group.cancelAll()
        }
        logger.notice("supervisor stopped")
        if let escalation { throw escalation }
    }

    /// What the loop holds between actions: the scheduled timers and each child's notify
    /// socket (finishing its stream closes the socket).
    private struct Effects {
        var timers: [Machine.Timer: DeadlineTimers.Timer] = [:]
        var notifySockets: [Machine.ChildID: AsyncStream<Void>.Continuation] = [:]
    }

    private func perform(_ action: Machine.Action, effects: inout Effects, events: MessageQueue<Machine.Event>, group: inout DiscardingTaskGroup) {
        switch action {
        case .openNotifySocket(let id, let path):
            let listener: NotifyListener
            do {
                listener = try NotifyListener(path: path)
            } catch {
                events.enqueue(.notifySocketFailed(id, problem: (error as? SupervisorError)?.message ?? "\(error)"))
                return
            }
            let (closed, close) = AsyncStream<Void>.makeStream()
            effects.notifySockets[id] = close
            // The socket lives as long as the child is supervised (across its restarts).
            group.addTask {
                await self.part("\(id.name) notify socket") {
                    await withDiscardingTaskGroup { socket in
                        socket.addTask { await self.listen(id, with: listener, events: events) }
                        for await _ in closed {}
                        socket.cancelAll()
                    }
                }
            }
            events.enqueue(.notifySocketOpened(id))
        case .closeNotifySocket(let id):
            effects.notifySockets.removeValue(forKey: id)?.finish()
        case .spawn(let id, let run, let spec):
            let process = ChildProcess()
            processes.withLock { $0[id] = process }
            group.addTask {
                await self.part("\(id.name) runs") {
                    let ending: Machine.ChildEnding
                    do {
                        switch try await process.run(spec, started: { events.enqueue(.started(id, run: run, pid: $0)) }) {
                        case .exited(let code): ending = .exited(code: code)
                        case .signaled(let signal): ending = .signaled(signal)
                        }
                    } catch {
                        ending = .couldNotStart("\(error)")
                    }
                    events.enqueue(.exited(id, run: run, ending))
                }
            }
        case .signal(let id, let signal, let record):
            let delivered = processes.withLock { $0[id] }?.signal(signal) ?? false
            if delivered, let record { log(record) }
        case .notifySystemd(let message):
            let delivered: Bool
            switch message {
            case .ready(let status): delivered = notifier.ready(status: status)
            case .status(let status): delivered = notifier.status(status)
            case .watchdog: delivered = notifier.watchdog()
            case .reloading: delivered = notifier.reloading()
            case .stopping(let status): delivered = notifier.stopping(status: status)
            case .extendTimeout(let duration): delivered = notifier.extendTimeout(by: duration)
            }
            // Without a service manager there is nothing to retry.
            events.enqueue(.systemdAnswered(message, delivered: delivered || !notifier.isSupervised))
        case .schedule(let timer, let deadline):
            _ = effects.timers[timer]?.cancel()
            effects.timers[timer] = DeadlineTimers.shared.schedule(at: deadline) { events.enqueue(.timer(timer)) }
        case .log(let record):
            log(record)
        case .childUp(let name, let up):
            metrics?.set(Metric.childUp, name, to: up ? 1 : 0)
        case .childRestarted(let name):
            metrics?.increment(Metric.childRestarts, name)
        case .writeEnvironmentsFile(let configuration):
            writeEnvironmentsFile(configuration)
        case .loadConfiguration:
            do {
                let configuration = try SupervisorConfiguration.load(path: options.configurationPath)
                let specs = try configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName)
                events.enqueue(.configurationLoaded(.success(.init(configuration: configuration, specs: specs))))
            } catch {
                events.enqueue(.configurationLoaded(.failure(.init(problem: (error as? SupervisorError)?.message ?? "\(error)"))))
            }
        case .armShutdownLimit(let limit):
            ShutdownDeadline.arm(limit: limit, role: "supervisor", logger: logger) {
                [
                    "children": "\(self.processes.withLock { $0.filter { $0.value.processID != nil }.keys.map(\.name).sorted() })",
                    "running": "\(self.runningParts.withLock { $0.keys.sorted() })",
                ]
            }
        case .finish:
            break
        }
    }

    /// The child's notify socket: every message becomes an event, up to the backlog bound.
    private func listen(_ id: Machine.ChildID, with listener: NotifyListener, events: MessageQueue<Machine.Event>) async {
        do {
            try await listener.run { assignments in
                switch self.notifyBacklog.withLock({ $0.admit(id) }) {
                case .queue:
                    events.enqueue(.notified(id, assignments))
                case .dropFirst(let limit):
                    self.logger.warning("child floods its notify socket; dropping its messages until the supervisor catches up", metadata: [
                        "child": "\(id.name)", "backlog": "\(limit)",
                    ])
                case .drop:
                    break
                }
            }
        } catch {
            if !Task.isCancelled {
                logger.error("child notify socket failed", metadata: ["child": "\(id.name)", "error": "\(error)"])
            }
        }
    }

    /// One of `id`'s notify messages left the queue; once none is left, says how many were dropped.
    private func handledNotification(of id: Machine.ChildID) {
        if let dropped = notifyBacklog.withLock({ $0.handled(id) }) {
            logger.warning("dropped notify messages of a child that flooded its socket", metadata: ["child": "\(id.name)", "dropped": "\(dropped)"])
        }
    }

    private func log(_ record: Machine.LogRecord) {
        logger.log(level: record.level, "\(record.message)", metadata: record.metadata.mapValues { .string($0) })
    }

    // MARK: Files

    /// Writes the configured environments for the gateway (`--environments-file`), atomically:
    /// the gateway may be reading it.
    private func writeEnvironmentsFile(_ configuration: SupervisorConfiguration) {
        let text = "# Written by vps-gateway supervise: the environments this node serves.\n"
            + configuration.environments.map { $0.name + "\n" }.joined()
        do {
            try text.write(toFile: configuration.environmentsFile, atomically: true, encoding: .utf8)
        } catch {
            logger.error("cannot write the environments file; the gateway keeps its environments", metadata: ["path": "\(configuration.environmentsFile)", "error": "\(error)"])
        }
    }

    /// Takes `notify_directory/supervisor.lock`, creating the directory; refuses (naming the
    /// holder's pid) when another supervisor holds it.
    private func lockNotifyDirectory() throws -> InstanceLock {
        let directory = configuration.supervisor.notifyDirectory
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do {
            return try InstanceLock(path: directory + "/supervisor.lock")
        } catch where error.code == .alreadyRunning {
            throw SupervisorError(
                code: .alreadyRunning,
                message: "another supervisor (\(error.holderDescription)) runs on \(options.configurationPath) (it holds \(directory)/supervisor.lock); stop it first (under systemd: systemctl stop vps-gateway), or give this one another supervisor.notify_directory"
            )
        } catch {
            throw SupervisorError(code: .notifySocketFailed, message: "\(error.message); is supervisor.notify_directory writable?")
        }
    }

    private func part(_ name: String, _ body: () async -> Void) async {
        runningParts.withLock { $0[name, default: 0] += 1 }
        defer {
            runningParts.withLock { parts in
                parts[name, default: 1] -= 1
                if parts[name] == 0 { parts[name] = nil }
            }
        }
        await body()
    }
}
