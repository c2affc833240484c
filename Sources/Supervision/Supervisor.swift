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

    /// What the supervisor knows of one child.
    struct ChildState {
        var spec: ChildSpec
        var phase = Phase.starting
        var ready = false
        var lastPing = ContinuousClock.now
        var status = ""
        var restarts = 0
        var stopping = false
        /// When the watchdog sent SIGABRT to the current run.
        var abortedAt: ContinuousClock.Instant?

        enum Phase: String { case starting, running, backoff, failed, stopped }
    }

    private let options: Options
    private let logger: Logger
    private let notifier: ServiceNotifier
    private let state: Mutex<State>
    private let events = MessageQueue<Event>(capacity: Int.max)

    private struct State {
        var configuration: SupervisorConfiguration
        var children: [String: ChildState] = [:]
        var processes: [String: ChildProcess] = [:]
        /// Start order, for stopping in reverse.
        var order: [String] = []
        var readySent = false
        /// The STATUS line systemd has now, whoever sent it (the reporter or a reload).
        var reportedStatus = ""
        var lastReloadProblem: String?
        /// A second SIGTERM/SIGINT during the stop: children are killed, not waited for.
        var hurry = false
        /// A reload changed the environments before the gateway listened (and could take
        /// SIGHUP): it is told once it does.
        var environmentsChangedBeforeServing = false
        /// Workers wait for the gateway to listen (they would only fail to connect and log
        /// it); until then the configured ones are kept here.
        var pendingWorkers: [ChildSpec]? = []
    }

    enum Event: Sendable {
        case signal(UnixSignal)
        case gaveUp(String)
        /// The gateway listens (it asked for more start time while it replays, or is ready).
        case gatewayServing
    }

    /// Restarts and up/down per child; nil records nothing.
    private let metrics: MetricsRegistry?
    /// The supervisor's concurrent parts still running, by name: what a stop that outlives
    /// its limit names as unfinished.
    private let runningParts = Mutex<[String: Int]>([:])

    public init(options: Options, logger: Logger, notifier: ServiceNotifier = ServiceNotifier(), metrics: MetricsRegistry? = nil) throws {
        self.options = options
        self.metrics = metrics
        self.logger = logger
        self.notifier = notifier
        let configuration = try SupervisorConfiguration.load(path: options.configurationPath)
        // Fails early on a missing secret or bad override.
        _ = try configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName)
        self.state = Mutex(State(configuration: configuration))
    }

    /// Runs until SIGTERM/SIGINT (returns), or until the gateway, or a worker with `escalate`
    /// set, is given up (throws).
    public func run() async throws {
        // Before any socket is touched: a second supervisor on this configuration must not
        // replace the first one's notify sockets.
        let lock = try lockNotifyDirectory()
        defer { withExtendedLifetime(lock) {} }
        let specs = try state.withLock { try $0.configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName) }
        var escalation: SupervisorError?
        await withDiscardingTaskGroup { group in
            group.addTask {
                await self.part("signals") {
                    for await signal in await UnixSignalsSequence(trapping: .sigterm, .sigint, .sighup) {
                        self.events.enqueue(.signal(signal))
                    }
                }
            }
            group.addTask { await self.part("child watchdog") { await self.watchChildren() } }
            group.addTask { await self.part("systemd reporter") { await self.reportToSystemd() } }
            writeEnvironmentsFile(state.withLock { $0.configuration })
            start(specs[0], in: &group)
            state.withLock { $0.pendingWorkers = Array(specs.dropFirst()) }
            loop: while let batch = await events.nextBatch() {
                for event in batch {
                    switch event {
                    case .gatewayServing:
                        let (workers, tell) = state.withLock { state in
                            defer {
                                state.pendingWorkers = nil
                                state.environmentsChangedBeforeServing = false
                            }
                            return (state.pendingWorkers ?? [], state.environmentsChangedBeforeServing)
                        }
                        if tell { state.withLock { $0.processes["gateway"] }?.signal(SIGHUP) }
                        for spec in workers { start(spec, in: &group) }
                    case .signal(.sighup):
                        reload(in: &group)
                    case .signal:
                        break loop
                    case .gaveUp(let name):
                        // Without the gateway nothing on the node works: that always goes to
                        // systemd. A worker does when `escalate` says so.
                        if name == "gateway" {
                            escalation = SupervisorError(code: .childGaveUp, message: "the gateway exceeded its restart intensity")
                            break loop
                        }
                        if state.withLock({ $0.configuration.supervisor.escalate }) {
                            escalation = SupervisorError(code: .childGaveUp, message: "child \(name) exceeded its restart intensity and escalate is set")
                            break loop
                        }
                    }
                }
            }
            // Workers, then the gateway, each get the grace; SIGKILL ends either wait. The
            // limit only fires if reaping itself hangs.
            let grace = state.withLock { $0.configuration.supervisor.shutdownGrace }
            ShutdownDeadline.arm(limit: grace * 2 + .seconds(5), role: "supervisor", logger: logger) {
                [
                    "children": "\(self.state.withLock { $0.processes.filter { $0.value.processID != nil }.keys.sorted() })",
                    "running": "\(self.runningParts.withLock { $0.keys.sorted() })",
                ]
            }
            // After the deadline is armed: nothing said to systemd may hold up the stop.
            notifier.stopping(status: escalation.map { "stopping: \($0.message)" } ?? "stopping")
            logger.notice("supervisor stopping", metadata: ["reason": "\(escalation?.message ?? "signal")"])
            group.addTask { await self.part("second signal") { await self.killOnSecondSignal() } }
            await stopAll()
            group.cancelAll()
        }
        logger.notice("supervisor stopped")
        if let escalation { throw escalation }
    }

    // MARK: Children

    private func start(_ spec: ChildSpec, in group: inout DiscardingTaskGroup) {
        let process = ChildProcess()
        state.withLock { state in
            state.children[spec.name] = ChildState(spec: spec)
            state.processes[spec.name] = process
            if !state.order.contains(spec.name) { state.order.append(spec.name) }
        }
        let listener: NotifyListener
        do {
            listener = try NotifyListener(path: spec.notifySocket)
        } catch {
            let problem = (error as? SupervisorError)?.message ?? "\(error)"
            logger.error("cannot make the child's notify socket; not starting it", metadata: ["child": "\(spec.name)", "error": "\(problem)"])
            update(spec.name) {
                $0.phase = .failed
                $0.status = problem
            }
            events.enqueue(.gaveUp(spec.name))
            return
        }
        // The socket lives as long as the child is supervised (across its restarts).
        group.addTask {
            await withDiscardingTaskGroup { child in
                child.addTask { await self.part("\(spec.name) notify socket") { await self.listen(to: spec, with: listener) } }
                await self.part("\(spec.name) runs") { await self.supervise(spec, process) }
                child.cancelAll()
            }
        }
    }

    /// Keeps one child running: spawn, wait, decide (restart after backoff or give up).
    private func supervise(_ spec: ChildSpec, _ process: ChildProcess) async {
        let policy = state.withLock { $0.configuration.supervisor }
        var tracker = RestartTracker(policy: .init(
            initialDelay: policy.restartInitialDelay, maxDelay: policy.restartMaxDelay,
            intensity: policy.intensity, period: policy.intensityPeriod, stableAfter: policy.stableAfter
        ))
        while !Task.isCancelled {
            let startedAt = ContinuousClock.now
            update(spec.name) {
                $0.phase = .running
                $0.ready = false
                $0.lastPing = startedAt
                $0.abortedAt = nil
            }
            let ending: String
            do {
                let status = try await process.run(spec) { pid in
                    self.logger.info("child started", metadata: ["child": "\(spec.name)", "pid": "\(pid)"])
                    self.metrics?.set(Metric.childUp, spec.name, to: 1)
                }
                switch status {
                case .exited(let code): ending = "exited with code \(code)"
                case .signaled(let signal): ending = "killed by signal \(signal)"
                }
            } catch {
                ending = "could not start: \(error)"
            }
            let stopping = state.withLock { $0.children[spec.name]?.stopping ?? true }
            metrics?.set(Metric.childUp, spec.name, to: 0)
            logger.log(level: stopping ? .info : .warning, "child exited", metadata: ["child": "\(spec.name)", "how": "\(ending)"])
            if stopping || Task.isCancelled {
                update(spec.name) { $0.phase = .stopped }
                return
            }
            switch tracker.exited(startedAt: startedAt, now: .now, random: Double.random(in: 0..<1)) {
            case .restart(let delay):
                update(spec.name) {
                    $0.phase = .backoff
                    $0.restarts = tracker.restarts
                    $0.status = ending
                }
                metrics?.increment(Metric.childRestarts, spec.name)
                logger.info("child restarting", metadata: [
                    "child": "\(spec.name)", "delay_ms": "\(delay.wholeMilliseconds)",
                    "restarts": "\(tracker.restarts)",
                ])
                do { try await Task.sleep(for: delay) } catch { return }
                if state.withLock({ $0.children[spec.name]?.stopping ?? true }) { return }
            case .giveUp(let restarts):
                update(spec.name) {
                    $0.phase = .failed
                    $0.status = "gave up after \(restarts) restarts within \(policy.intensityPeriod): \(ending)"
                }
                logger.error("child given up", metadata: [
                    "child": "\(spec.name)", "restarts": "\(restarts)", "period": "\(policy.intensityPeriod)", "last": "\(ending)",
                ])
                events.enqueue(.gaveUp(spec.name))
                return
            }
        }
    }

    /// The child's notify socket: READY, STATUS and WATCHDOG pings.
    private func listen(to spec: ChildSpec, with listener: NotifyListener) async {
        do {
            try await listener.run { assignments in
                self.update(spec.name) { child in
                    if assignments["READY"] == "1" { child.ready = true }
                    if let status = assignments["STATUS"] { child.status = status }
                    if assignments["WATCHDOG"] == "1" || assignments["READY"] == "1" { child.lastPing = .now }
                }
                guard spec.role == .gateway else { return }
                if assignments["READY"] == "1" || assignments["EXTEND_TIMEOUT_USEC"] != nil { self.events.enqueue(.gatewayServing) }
                // The gateway's replay at start is the unit's start: systemd's timeout must
                // allow for it.
                if let usec = assignments["EXTEND_TIMEOUT_USEC"].flatMap(Int64.init), !self.state.withLock({ $0.readySent }) {
                    self.notifier.extendTimeout(by: .microseconds(usec))
                }
            }
        } catch {
            if !Task.isCancelled {
                logger.error("child notify socket failed", metadata: ["child": "\(spec.name)", "error": "\(error)"])
            }
        }
    }

    /// Kills (SIGABRT) a running child that stopped pinging within its watchdog interval, and
    /// (like systemd's TimeoutAbortSec) SIGKILLs it when it is still there a grace later.
    private func watchChildren() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            let (interval, stale, overdue) = state.withLock { state -> (Duration, [String], [String]) in
                let policy = state.configuration.supervisor
                let now = ContinuousClock.now
                var stale: [String] = [], overdue: [String] = []
                for (name, child) in state.children where child.phase == .running && !child.stopping {
                    if let abortedAt = child.abortedAt {
                        if now - abortedAt > policy.shutdownGrace { overdue.append(name) }
                    } else if now - child.lastPing > policy.childWatchdog {
                        stale.append(name)
                        state.children[name]?.abortedAt = now
                    }
                }
                return (policy.childWatchdog, stale, overdue)
            }
            for name in stale {
                logger.error("child stopped pinging its watchdog; killing it with SIGABRT", metadata: ["child": "\(name)", "interval": "\(interval)"])
                let process = state.withLock { $0.processes[name] }
                process?.signal(SIGABRT)
                process?.signal(SIGCONT)  // a stopped process only dies once continued
            }
            for name in overdue where state.withLock({ $0.processes[name] })?.signal(SIGKILL) == true {
                logger.error("child did not end after SIGABRT; killed", metadata: ["child": "\(name)"])
            }
        }
    }

    // MARK: systemd

    /// READY=1 once the gateway (and, configured, every worker) said READY; a STATUS line
    /// kept current; WATCHDOG=1 at half our interval while every running child pings.
    private func reportToSystemd() async {
        let watchdog = notifier.watchdogInterval.map { $0 / 2 }
        var sinceWatchdog = Duration.zero
        let tick = min(watchdog ?? .milliseconds(500), .milliseconds(500))
        while !Task.isCancelled {
            let (ready, status, allPinging) = state.withLock { state in
                (self.readiness(state), self.statusLine(state), self.healthy(state))
            }
            // A message the manager's full queue dropped is sent again on the next tick.
            if ready && !state.withLock({ $0.readySent }) {
                if notifier.ready(status: status) || !notifier.isSupervised {
                    state.withLock {
                        $0.readySent = true
                        $0.reportedStatus = status
                    }
                    logger.notice("supervisor ready", metadata: ["status": "\(status)"])
                }
            } else if state.withLock({ state in
                // Compared with what systemd has, not with what this loop sent last: a
                // reload reports its own line, and a change that came and went between two
                // ticks must not leave that one standing.
                status != state.reportedStatus
            }), notifier.status(status) || !notifier.isSupervised {
                state.withLock { $0.reportedStatus = status }
            }
            if let watchdog {
                sinceWatchdog += tick
                if sinceWatchdog >= watchdog {
                    sinceWatchdog = .zero
                    if allPinging { notifier.watchdog() }
                }
            }
            try? await Task.sleep(for: tick)
        }
    }

    private func readiness(_ state: State) -> Bool {
        guard state.children["gateway"]?.ready == true else { return false }
        guard state.configuration.supervisor.readyWhen == "all-workers" else { return true }
        return state.children.values.allSatisfy { $0.ready || $0.stopping }
    }

    private func healthy(_ state: State) -> Bool {
        let interval = state.configuration.supervisor.childWatchdog
        return state.children.values.allSatisfy { $0.phase != .running || ContinuousClock.now - $0.lastPing <= interval }
    }

    /// `gateway ready; production running; beta backoff (restarts 2); clients: …`
    private func statusLine(_ state: State) -> String {
        var parts: [String] = []
        for name in state.order {
            guard let child = state.children[name], !child.stopping || child.phase != .stopped else { continue }
            let label = name.hasPrefix("worker-") ? String(name.dropFirst("worker-".count)) : name
            var part = "\(label) \(child.phase == .running ? (child.ready ? "ready" : "starting") : child.phase.rawValue)"
            if child.restarts > 0 { part += " (restarts \(child.restarts))" }
            parts.append(part)
        }
        var line = parts.joined(separator: ", ")
        if let gateway = state.children["gateway"], gateway.ready, !gateway.status.isEmpty {
            line += "; " + gateway.status.replacingOccurrences(of: "gateway: ", with: "")
        }
        if let problem = state.lastReloadProblem { line += "; last reload refused: \(problem)" }
        return line
    }

    // MARK: Reload and stop

    private func reload(in group: inout DiscardingTaskGroup) {
        notifier.reloading()
        logger.notice("supervisor reloading", metadata: ["config": "\(options.configurationPath)"])
        let configuration: SupervisorConfiguration
        let specs: [ChildSpec]
        do {
            configuration = try SupervisorConfiguration.load(path: options.configurationPath)
            specs = try configuration.childSpecs(executable: options.executable, variables: options.variables, hostName: options.hostName)
        } catch {
            let problem = (error as? SupervisorError)?.message ?? "\(error)"
            state.withLock { $0.lastReloadProblem = problem.split(separator: "\n").first.map(String.init) ?? problem }
            logger.error("reload refused; the running children stay as they are", metadata: ["problem": "\(problem)"])
            reportReloaded()
            return
        }
        do {
            let wanted = Dictionary(uniqueKeysWithValues: specs.filter { $0.role != .gateway }.map { ($0.name, $0) })
            let (removed, added, changed) = state.withLock { state -> ([String], [ChildSpec], [ChildSpec]) in
                state.lastReloadProblem = nil
                if state.pendingWorkers != nil {
                    // The gateway does not listen yet: no worker runs; start the new set later,
                    // and tell the gateway the new environments once it listens.
                    state.pendingWorkers = Array(specs.dropFirst())
                    state.configuration.environments = configuration.environments
                    state.environmentsChangedBeforeServing = true
                    return ([], [], [])
                }
                let current = state.children.filter { $0.key != "gateway" && !$0.value.stopping }
                let removed = current.keys.filter { wanted[$0] == nil }
                let added = wanted.values.filter { current[$0.name] == nil }
                let changed = wanted.values.filter { current[$0.name].map { $0.spec != wanted[$0.spec.name] } ?? false }
                if state.children["gateway"]?.spec != specs.first {
                    logger.warning("gateway settings changed; restart the service to apply them")
                }
                state.configuration.environments = configuration.environments
                return (removed, added, changed)
            }
            // The gateway learns the new set first, so an added environment's lookups go to it.
            writeEnvironmentsFile(configuration)
            if !state.withLock({ $0.environmentsChangedBeforeServing }) {
                state.withLock { $0.processes["gateway"] }?.signal(SIGHUP)
            }
            for name in removed + changed.map(\.name) { stopChild(name) }
            for spec in added { start(spec, in: &group) }
            // A changed worker starts again once its old run has stopped.
            for spec in changed {
                group.addTask {
                    await self.waitStopped(spec.name)
                    self.events.enqueue(.signal(.sighup))
                }
            }
            logger.notice("supervisor reloaded", metadata: [
                "added": "\(added.map(\.name).sorted())", "removed": "\(removed.sorted())", "changed": "\(changed.map(\.name).sorted())",
            ])
        }
        reportReloaded()
    }

    /// READY=1 after RELOADING=1, with the current STATUS line (recorded as what systemd
    /// has, so the reporter sends the next change). Before the first READY=1 the status only:
    /// the service is not ready because a reload finished.
    private func reportReloaded() {
        let (status, ready) = state.withLock { state in
            state.reportedStatus = statusLine(state)
            return (state.reportedStatus, state.readySent)
        }
        let sent = ready ? notifier.ready(status: status) : notifier.status(status)
        if !sent && notifier.isSupervised {
            // Dropped (the manager's queue is full): the reporter sends both again.
            state.withLock { state in
                state.reportedStatus = ""
                if ready { state.readySent = false }
            }
        }
    }

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
        let directory = state.withLock { $0.configuration.supervisor.notifyDirectory }
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

    /// During the stop, a second SIGTERM/SIGINT kills every child at once.
    private func killOnSecondSignal() async {
        while let batch = await events.nextBatch() {
            guard batch.contains(where: { if case .signal(let signal) = $0 { signal != .sighup } else { false } }) else { continue }
            let processes = state.withLock { state in
                state.hurry = true
                return Array(state.processes.values)
            }
            logger.notice("second signal: killing every child now")
            for process in processes { process.signal(SIGKILL) }
            return
        }
    }

    /// SIGTERM to one child; it is not restarted.
    private func stopChild(_ name: String) {
        let process = state.withLock { state -> ChildProcess? in
            state.children[name]?.stopping = true
            return state.processes[name]
        }
        process?.signal(SIGTERM)
    }

    private func waitStopped(_ name: String) async {
        while state.withLock({ $0.children[name].map { $0.phase != .stopped && $0.phase != .failed } ?? false }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        state.withLock { state in
            state.children[name] = nil
            state.processes[name] = nil
        }
    }

    /// Workers first (they drain), then the gateway; SIGKILL for whatever outlives the grace.
    private func stopAll() async {
        let (order, grace) = state.withLock { ($0.order, $0.configuration.supervisor.shutdownGrace) }
        let workers = order.filter { $0 != "gateway" }
        for names in [workers, ["gateway"]] {
            for name in names { stopChild(name) }
            let deadline = ContinuousClock.now + grace
            while ContinuousClock.now < deadline, state.withLock({ state in !state.hurry && names.contains { state.processes[$0]?.processID != nil } }) {
                try? await Task.sleep(for: .milliseconds(50))
            }
            for name in names {
                if state.withLock({ $0.processes[name] })?.signal(SIGKILL) == true {
                    logger.error("child did not stop within the grace period; killed", metadata: ["child": "\(name)"])
                }
            }
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

    private func update(_ name: String, _ change: (inout ChildState) -> Void) {
        state.withLock { state in
            if var child = state.children[name] {
                change(&child)
                state.children[name] = child
            }
        }
    }
}
