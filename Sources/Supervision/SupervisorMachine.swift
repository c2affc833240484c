import Logging
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// Every decision the supervisor makes, as a pure state machine: ``Supervisor`` feeds it
/// events (a child started or exited, a notify message, a timer, a signal, a reloaded file,
/// what systemd's socket took) and carries out the actions it returns (spawn, signal, open or
/// close a notify socket, tell systemd, schedule a timer, log). Nothing here waits, reads a
/// clock or touches a process, so every rule (restarts, the child watchdog, the ordered stop,
/// reloads, readiness) is testable without one. Waiting is deadlines, never polls: a timer is
/// scheduled for the instant something is due, and one that became moot when it fires (its
/// run ended, its stage is over) is ignored.
struct SupervisorMachine {
    /// One supervised child: a name and a serial, so that events of a child that was replaced
    /// (a changed worker after a reload) are told from its successor's.
    struct ChildID: Hashable, Sendable {
        let name: String
        let serial: Int
    }

    enum ChildEnding: Sendable, Equatable, CustomStringConvertible {
        case exited(code: Int32)
        case signaled(Int32)
        case couldNotStart(String)

        var description: String {
            switch self {
            case .exited(let code): "exited with code \(code)"
            case .signaled(let signal): "killed by signal \(signal)"
            case .couldNotStart(let problem): "could not start: \(problem)"
            }
        }
    }

    enum Event: Sendable {
        /// SIGTERM or SIGINT.
        case terminate
        /// SIGHUP.
        case reload
        case notifySocketOpened(ChildID)
        case notifySocketFailed(ChildID, problem: String)
        case started(ChildID, run: Int, pid: Int32)
        case exited(ChildID, run: Int, ChildEnding)
        /// A child's `sd_notify` message, as assignments.
        case notified(ChildID, [String: String])
        case timer(Timer)
        case configurationLoaded(Result<Reloaded, ReloadRefused>)
        /// Whether systemd's socket took a READY or STATUS message (its queue may be full).
        case systemdAnswered(SystemdMessage, delivered: Bool)
    }

    struct Reloaded: Sendable {
        var configuration: SupervisorConfiguration
        var specs: [ChildSpec]
    }

    struct ReloadRefused: Error, Sendable {
        var problem: String
    }

    enum Timer: Hashable, Sendable {
        case restart(ChildID, run: Int)
        case childWatchdog(ChildID, run: Int)
        /// The grace after the watchdog's SIGABRT; SIGKILL then.
        case abortOverdue(ChildID, run: Int)
        case stopGrace(stage: Int)
        case systemdWatchdog
        /// A READY or STATUS that systemd's full queue dropped is sent again.
        case reportAgain
    }

    enum SystemdMessage: Sendable, Equatable {
        case ready(status: String)
        case status(String)
        case watchdog
        case reloading
        case stopping(status: String)
        case extendTimeout(Duration)
    }

    struct LogRecord: Sendable, Equatable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String] = [:]
    }

    enum Action: Sendable, Equatable {
        case openNotifySocket(ChildID, path: String)
        case closeNotifySocket(ChildID)
        case spawn(ChildID, run: Int, ChildSpec)
        /// `ifDelivered` is logged only when the signal reached a running child.
        case signal(ChildID, Int32, ifDelivered: LogRecord? = nil)
        case notifySystemd(SystemdMessage)
        case schedule(Timer, at: ContinuousClock.Instant)
        case log(LogRecord)
        case childUp(String, Bool)
        case childRestarted(String)
        case writeEnvironmentsFile(SupervisorConfiguration)
        case loadConfiguration
        /// The bound on the whole stop (a process whose reaping hangs).
        case armShutdownLimit(Duration)
        /// The run is over; a non-nil error is what the supervisor exits with.
        case finish(SupervisorError?)
    }

    enum Phase: String, Sendable {
        /// Its notify socket is being made.
        case starting
        case running, backoff, failed, stopped
    }

    struct Child: Sendable {
        let id: ChildID
        var spec: ChildSpec
        var tracker: RestartTracker
        var phase = Phase.starting
        var run = 0
        /// A run was spawned and has not exited yet.
        var alive = false
        var pidKnown = false
        var ready = false
        var startedAt: ContinuousClock.Instant
        var lastPing: ContinuousClock.Instant
        var status = ""
        /// Told to stop (or never to start again): it is not restarted.
        var stopping = false
        /// When the watchdog sent SIGABRT to the current run.
        var abortedAt: ContinuousClock.Instant?
        /// A reload changed this worker: the new spec starts once this run has ended.
        var replacement: ChildSpec?
    }

    private struct Stop {
        enum Stage { case workers, gateway }
        var stage = Stage.workers
        /// Numbers the stages, so a grace timer of a finished stage is ignored.
        var number = 0
        var escalation: SupervisorError?
        /// A second SIGTERM/SIGINT: every child is killed, not waited for.
        var hurry = false
        var finished = false
    }

    private(set) var children: [String: Child] = [:]
    /// Start order: the STATUS line's order.
    private var order: [String] = []
    private var configuration: SupervisorConfiguration
    private var policy: SupervisorConfiguration.Policy { configuration.supervisor }
    private let specs: [ChildSpec]
    private let configurationPath: String
    /// Half of systemd's watchdog interval, when systemd asked for pings.
    private let systemdWatchdog: Duration?
    private let random: @Sendable () -> Double
    /// Workers wait for the gateway to listen (they would only fail to connect and log it);
    /// until then the configured ones are kept here.
    private var pendingWorkers: [ChildSpec]? = []
    /// A reload changed the environments before the gateway listened (and could take SIGHUP):
    /// it is told once it does.
    private var environmentsChangedBeforeServing = false
    private var readySent = false
    private var readyLogged = false
    /// The STATUS line systemd has now, whoever sent it (a report or a reload).
    private var reportedStatus = ""
    private var reportAgainScheduled = false
    private var lastReloadProblem: String?
    private var stop: Stop?
    private var nextSerial = 0
    private var actions: [Action] = []

    /// `specs` is what `configuration` asks for, gateway first.
    init(
        configuration: SupervisorConfiguration, specs: [ChildSpec], configurationPath: String,
        systemdWatchdog: Duration?, random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.configuration = configuration
        self.specs = specs
        self.configurationPath = configurationPath
        self.systemdWatchdog = systemdWatchdog
        self.random = random
    }

    /// The first actions: the environments file, the gateway's notify socket, systemd's
    /// watchdog timer.
    mutating func start(now: ContinuousClock.Instant) -> [Action] {
        emit(.writeEnvironmentsFile(configuration))
        if let gateway = specs.first { supervise(gateway, now: now) }
        pendingWorkers = Array(specs.dropFirst())
        if let systemdWatchdog { emit(.schedule(.systemdWatchdog, at: now + systemdWatchdog)) }
        report()
        return takeActions()
    }

    mutating func handle(_ event: Event, now: ContinuousClock.Instant) -> [Action] {
        switch event {
        case .terminate:
            if stop == nil { beginStop(escalation: nil, now: now) } else { hurry() }
        case .reload:
            guard stop == nil else { break }
            emit(.notifySystemd(.reloading))
            log(.notice, "supervisor reloading", ["config": configurationPath])
            emit(.loadConfiguration)
        case .configurationLoaded(let result):
            guard stop == nil else { break }
            switch result {
            case .success(let reloaded): apply(reloaded, now: now)
            case .failure(let refused):
                lastReloadProblem = refused.problem.split(separator: "\n").first.map(String.init) ?? refused.problem
                log(.error, "reload refused; the running children stay as they are", ["problem": refused.problem])
                reportReloaded()
            }
        case .notifySocketOpened(let id):
            guard let child = current(id), child.phase == .starting else {
                // Stopped or replaced while its socket was made.
                emit(.closeNotifySocket(id))
                break
            }
            if child.stopping { finished(id.name, now: now) } else { spawn(id.name, now: now) }
        case .notifySocketFailed(let id, let problem):
            guard current(id) != nil else { break }
            log(.error, "cannot make the child's notify socket; not starting it", ["child": id.name, "error": problem])
            update(id.name) {
                $0.phase = .failed
                $0.status = problem
            }
            if children[id.name]?.stopping == true { finished(id.name, now: now) } else { gaveUp(id.name, now: now) }
        case .started(let id, let run, let pid):
            guard let child = current(id), child.run == run, child.alive else { break }
            update(id.name) { $0.pidKnown = true }
            log(.info, "child started", ["child": id.name, "pid": "\(pid)"])
            emit(.childUp(id.name, true))
            // Told to stop before its pid was known: the signal is sent now (during the
            // stop, once its stage has begun).
            guard child.stopping else { break }
            if let stop {
                if stop.hurry {
                    emit(.signal(id, SIGKILL))
                } else if stageNames(stop.stage).contains(id.name) {
                    emit(.signal(id, SIGTERM))
                }
            } else {
                emit(.signal(id, SIGTERM))
            }
        case .exited(let id, let run, let ending):
            guard let child = current(id), child.run == run, child.alive else { break }
            exited(child, ending, now: now)
        case .notified(let id, let assignments):
            notified(id, assignments, now: now)
        case .timer(let timer):
            fired(timer, now: now)
        case .systemdAnswered(let message, let delivered):
            answered(message, delivered: delivered, now: now)
        }
        if stop == nil { report() }
        return takeActions()
    }

    /// `gateway ready, production running, beta backoff (restarts 2); clients: …`
    var statusLine: String {
        var parts: [String] = []
        for name in order {
            guard let child = children[name], !child.stopping || child.phase != .stopped else { continue }
            let label = name.hasPrefix("worker-") ? String(name.dropFirst("worker-".count)) : name
            var part = "\(label) \(child.phase == .running ? (child.ready ? "ready" : "starting") : child.phase.rawValue)"
            if child.tracker.restarts > 0 { part += " (restarts \(child.tracker.restarts))" }
            parts.append(part)
        }
        var line = parts.joined(separator: ", ")
        if let gateway = children["gateway"], gateway.ready, !gateway.status.isEmpty {
            line += "; " + (gateway.status.hasPrefix("gateway: ") ? String(gateway.status.dropFirst("gateway: ".count)) : gateway.status)
        }
        if let problem = lastReloadProblem { line += "; last reload refused: \(problem)" }
        return line
    }

    // MARK: Children

    /// A new child to supervise: its notify socket first (bound before the child starts, so
    /// its first READY=1 cannot be lost), then its first run.
    private mutating func supervise(_ spec: ChildSpec, now: ContinuousClock.Instant) {
        let id = ChildID(name: spec.name, serial: nextSerial)
        nextSerial += 1
        children[spec.name] = Child(
            id: id, spec: spec,
            tracker: RestartTracker(policy: .init(
                initialDelay: policy.restartInitialDelay, maxDelay: policy.restartMaxDelay,
                intensity: policy.intensity, period: policy.intensityPeriod, stableAfter: policy.stableAfter
            )),
            startedAt: now, lastPing: now
        )
        if !order.contains(spec.name) { order.append(spec.name) }
        emit(.openNotifySocket(id, path: spec.notifySocket))
    }

    private mutating func spawn(_ name: String, now: ContinuousClock.Instant) {
        guard var child = children[name] else { return }
        child.run += 1
        child.phase = .running
        child.alive = true
        child.pidKnown = false
        child.ready = false
        child.startedAt = now
        child.lastPing = now
        child.abortedAt = nil
        children[name] = child
        emit(.spawn(child.id, run: child.run, child.spec))
        emit(.schedule(.childWatchdog(child.id, run: child.run), at: now + policy.childWatchdog))
    }

    private mutating func exited(_ child: Child, _ ending: ChildEnding, now: ContinuousClock.Instant) {
        let name = child.id.name
        update(name) {
            $0.alive = false
            $0.pidKnown = false
        }
        emit(.childUp(name, false))
        log(child.stopping ? .info : .warning, "child exited", ["child": name, "how": ending.description])
        if child.stopping {
            finished(name, now: now)
            return
        }
        var tracker = child.tracker
        let decision = tracker.exited(startedAt: child.startedAt, now: now, random: random())
        update(name) { $0.tracker = tracker }
        switch decision {
        case .restart(let delay):
            update(name) {
                $0.phase = .backoff
                $0.status = ending.description
            }
            emit(.childRestarted(name))
            log(.info, "child restarting", ["child": name, "delay_ms": "\(delay.wholeMilliseconds)", "restarts": "\(tracker.restarts)"])
            emit(.schedule(.restart(child.id, run: child.run), at: now + delay))
        case .giveUp(let restarts):
            let status = "gave up after \(restarts) restarts within \(policy.intensityPeriod): \(ending)"
            update(name) {
                $0.phase = .failed
                $0.status = status
            }
            log(.error, "child given up", ["child": name, "restarts": "\(restarts)", "period": "\(policy.intensityPeriod)", "last": ending.description])
            emit(.closeNotifySocket(child.id))
            gaveUp(name, now: now)
        }
    }

    /// Without the gateway nothing on the node works: giving it up always ends the run. A
    /// worker does when `escalate` says so.
    private mutating func gaveUp(_ name: String, now: ContinuousClock.Instant) {
        guard stop == nil else { return }
        if name == "gateway" {
            beginStop(escalation: SupervisorError(code: .childGaveUp, message: "the gateway exceeded its restart intensity"), now: now)
        } else if policy.escalate {
            beginStop(escalation: SupervisorError(code: .childGaveUp, message: "child \(name) exceeded its restart intensity and escalate is set"), now: now)
        }
    }

    /// SIGTERM to one child; it is not restarted. One that is not running is done at once.
    private mutating func stopChild(_ name: String, now: ContinuousClock.Instant) {
        guard let child = children[name] else { return }
        update(name) { $0.stopping = true }
        if child.alive {
            // A pid not known yet gets the signal when it is (`started`).
            if child.pidKnown { emit(.signal(child.id, SIGTERM)) }
        } else if child.phase != .starting {
            finished(name, now: now)
        }
    }

    /// A stopping child whose run has ended (or never will): its replacement starts, or it is
    /// gone; during the stop, the next stage may begin.
    private mutating func finished(_ name: String, now: ContinuousClock.Instant) {
        guard let child = children[name] else { return }
        update(name) { $0.phase = .stopped }
        emit(.closeNotifySocket(child.id))
        if stop != nil {
            advanceStop(now: now)
        } else if let replacement = child.replacement {
            supervise(replacement, now: now)
        } else {
            children[name] = nil
            order.removeAll { $0 == name }
        }
    }

    private mutating func notified(_ id: ChildID, _ assignments: [String: String], now: ContinuousClock.Instant) {
        guard current(id) != nil else { return }
        let ready = assignments["READY"] == "1"
        update(id.name) { child in
            if ready { child.ready = true }
            if let status = assignments["STATUS"] { child.status = status }
            if ready || assignments["WATCHDOG"] == "1" { child.lastPing = now }
        }
        guard id.name == "gateway" else { return }
        // The gateway listens once it asks for more start time (it replays) or is ready.
        if ready || assignments["EXTEND_TIMEOUT_USEC"] != nil { gatewayServing(now: now) }
        // The gateway's replay at start is the unit's start: systemd's timeout must allow for it.
        if let usec = assignments["EXTEND_TIMEOUT_USEC"].flatMap(Int64.init), !readySent {
            emit(.notifySystemd(.extendTimeout(.microseconds(usec))))
        }
    }

    private mutating func gatewayServing(now: ContinuousClock.Instant) {
        guard let workers = pendingWorkers else { return }
        pendingWorkers = nil
        let tell = environmentsChangedBeforeServing
        environmentsChangedBeforeServing = false
        guard stop == nil else { return }
        if tell, let gateway = children["gateway"] { emit(.signal(gateway.id, SIGHUP)) }
        for spec in workers { supervise(spec, now: now) }
    }

    // MARK: Timers

    private mutating func fired(_ timer: Timer, now: ContinuousClock.Instant) {
        switch timer {
        case .restart(let id, let run):
            guard let child = current(id), child.run == run, child.phase == .backoff, !child.stopping, stop == nil else { return }
            spawn(id.name, now: now)
        case .childWatchdog(let id, let run):
            guard let child = current(id), child.run == run, child.alive, !child.stopping, child.abortedAt == nil else { return }
            let due = child.lastPing + policy.childWatchdog
            guard now >= due else {
                emit(.schedule(timer, at: due))
                return
            }
            log(.error, "child stopped pinging its watchdog; killing it with SIGABRT", ["child": id.name, "interval": "\(policy.childWatchdog)"])
            update(id.name) { $0.abortedAt = now }
            emit(.signal(id, SIGABRT))
            emit(.signal(id, SIGCONT))  // a stopped process only dies once continued
            // Like systemd's TimeoutAbortSec: SIGKILL when it is still there a grace later.
            emit(.schedule(.abortOverdue(id, run: run), at: now + policy.shutdownGrace))
        case .abortOverdue(let id, let run):
            guard let child = current(id), child.run == run, child.alive, !child.stopping else { return }
            emit(.signal(id, SIGKILL, ifDelivered: LogRecord(level: .error, message: "child did not end after SIGABRT; killed", metadata: ["child": id.name])))
        case .stopGrace(let stage):
            guard let stop, stop.number == stage, !stop.finished else { return }
            for name in stageNames(stop.stage) {
                guard let child = children[name], child.alive else { continue }
                emit(.signal(child.id, SIGKILL, ifDelivered: LogRecord(level: .error, message: "child did not stop within the grace period; killed", metadata: ["child": name])))
            }
        case .systemdWatchdog:
            guard let systemdWatchdog else { return }
            if healthy(now: now) { emit(.notifySystemd(.watchdog)) }
            emit(.schedule(.systemdWatchdog, at: now + systemdWatchdog))
        case .reportAgain:
            reportAgainScheduled = false
        }
    }

    // MARK: systemd

    /// READY=1 once the gateway (and, configured, every worker) is ready; afterwards a STATUS
    /// line whenever it changes. Compared with what systemd has, not with what was sent last:
    /// a reload reports its own line.
    private mutating func report() {
        // systemd's queue was full: wait for the pause before trying again.
        guard !reportAgainScheduled else { return }
        let status = statusLine
        if readiness && !readySent {
            readySent = true
            reportedStatus = status
            emit(.notifySystemd(.ready(status: status)))
        } else if status != reportedStatus {
            reportedStatus = status
            emit(.notifySystemd(.status(status)))
        }
    }

    private mutating func answered(_ message: SystemdMessage, delivered: Bool, now: ContinuousClock.Instant) {
        switch message {
        case .ready(let status):
            if delivered {
                if !readyLogged {
                    readyLogged = true
                    log(.notice, "supervisor ready", ["status": status])
                }
                return
            }
            readySent = false
            reportedStatus = ""
        case .status:
            guard !delivered else { return }
            reportedStatus = ""
        default:
            return
        }
        if !reportAgainScheduled {
            reportAgainScheduled = true
            emit(.schedule(.reportAgain, at: now + .milliseconds(500)))
        }
    }

    private var readiness: Bool {
        guard children["gateway"]?.ready == true else { return false }
        guard policy.readyWhen == "all-workers" else { return true }
        return children.values.allSatisfy { $0.ready || $0.stopping }
    }

    /// Every running child pinged within its watchdog interval.
    private func healthy(now: ContinuousClock.Instant) -> Bool {
        children.values.allSatisfy { $0.phase != .running || now - $0.lastPing <= policy.childWatchdog }
    }

    // MARK: Reload

    private mutating func apply(_ reloaded: Reloaded, now: ContinuousClock.Instant) {
        lastReloadProblem = nil
        let specs = reloaded.specs
        if pendingWorkers != nil {
            // The gateway does not listen yet: no worker runs; start the new set later, and
            // tell the gateway the new environments once it listens.
            pendingWorkers = Array(specs.dropFirst())
            configuration.environments = reloaded.configuration.environments
            environmentsChangedBeforeServing = true
            emit(.writeEnvironmentsFile(reloaded.configuration))
            log(.notice, "supervisor reloaded", ["added": "[]", "removed": "[]", "changed": "[]"])
            reportReloaded()
            return
        }
        let wanted = Dictionary(uniqueKeysWithValues: specs.filter { $0.role != .gateway }.map { ($0.name, $0) })
        var added: [ChildSpec] = [], removed: [String] = [], changed: [String] = []
        for spec in specs where spec.role != .gateway {
            guard let child = children[spec.name] else {
                added.append(spec)
                continue
            }
            if child.stopping {
                // Still ending from an earlier reload: this spec follows it.
                update(spec.name) { $0.replacement = spec }
            } else if child.spec != spec {
                update(spec.name) { $0.replacement = spec }
                changed.append(spec.name)
            }
        }
        for name in order where name != "gateway" && wanted[name] == nil {
            guard let child = children[name] else { continue }
            if child.stopping {
                update(name) { $0.replacement = nil }
            } else {
                removed.append(name)
            }
        }
        if let gateway = children["gateway"], let spec = specs.first, gateway.spec != spec {
            log(.warning, "gateway settings changed; restart the service to apply them")
        }
        configuration.environments = reloaded.configuration.environments
        // The gateway learns the new set first, so an added environment's lookups go to it.
        emit(.writeEnvironmentsFile(reloaded.configuration))
        if let gateway = children["gateway"] { emit(.signal(gateway.id, SIGHUP)) }
        for name in removed + changed { stopChild(name, now: now) }
        for spec in added { supervise(spec, now: now) }
        log(.notice, "supervisor reloaded", [
            "added": "\(added.map(\.name).sorted())", "removed": "\(removed.sorted())", "changed": "\(changed.sorted())",
        ])
        reportReloaded()
    }

    /// READY=1 after RELOADING=1, with the current STATUS line (recorded as what systemd has).
    /// Before the first READY=1 the status only: the service is not ready because a reload
    /// finished.
    private mutating func reportReloaded() {
        reportedStatus = statusLine
        emit(.notifySystemd(readySent ? .ready(status: reportedStatus) : .status(reportedStatus)))
    }

    // MARK: Stop

    /// Workers, then the gateway, each get the grace; SIGKILL ends either wait.
    private mutating func beginStop(escalation: SupervisorError?, now: ContinuousClock.Instant) {
        stop = Stop(escalation: escalation)
        pendingWorkers = nil
        // The limit only fires if reaping itself hangs.
        emit(.armShutdownLimit(policy.shutdownGrace * 2 + .seconds(5)))
        // After the limit is armed: nothing said to systemd may hold up the stop.
        emit(.notifySystemd(.stopping(status: escalation.map { "stopping: \($0.message)" } ?? "stopping")))
        log(.notice, "supervisor stopping", ["reason": escalation?.message ?? "signal"])
        for name in order { update(name) { $0.stopping = true } }
        // Children that are not running are done now; a notify socket being made is done once made.
        for name in order {
            guard let child = children[name], !child.alive, child.phase != .starting, child.phase != .stopped else { continue }
            update(name) { $0.phase = .stopped }
            emit(.closeNotifySocket(child.id))
        }
        beginStage(now: now)
        advanceStop(now: now)
    }

    private mutating func beginStage(now: ContinuousClock.Instant) {
        guard let stop else { return }
        for name in stageNames(stop.stage) {
            if let child = children[name], child.alive, child.pidKnown { emit(.signal(child.id, SIGTERM)) }
        }
        emit(.schedule(.stopGrace(stage: stop.number), at: now + policy.shutdownGrace))
    }

    /// The next stage once every child of this one has ended; the finish after the gateway's.
    private mutating func advanceStop(now: ContinuousClock.Instant) {
        guard var stop, !stop.finished else { return }
        let waiting = stageNames(stop.stage).contains { name in
            children[name].map { $0.alive || $0.phase == .starting } ?? false
        }
        guard !waiting else { return }
        switch stop.stage {
        case .workers:
            stop.stage = .gateway
            stop.number += 1
            self.stop = stop
            beginStage(now: now)
            advanceStop(now: now)
        case .gateway:
            stop.finished = true
            self.stop = stop
            emit(.finish(stop.escalation))
        }
    }

    private func stageNames(_ stage: Stop.Stage) -> [String] {
        switch stage {
        case .workers: order.filter { $0 != "gateway" }
        case .gateway: ["gateway"]
        }
    }

    /// During the stop, a second SIGTERM/SIGINT kills every child at once.
    private mutating func hurry() {
        guard var stop, !stop.hurry, !stop.finished else { return }
        stop.hurry = true
        self.stop = stop
        log(.notice, "second signal: killing every child now")
        for name in order {
            if let child = children[name], child.alive, child.pidKnown { emit(.signal(child.id, SIGKILL)) }
        }
    }

    // MARK: Helpers

    /// The child `id` names, if it is still the one supervised under its name.
    private func current(_ id: ChildID) -> Child? {
        guard let child = children[id.name], child.id == id else { return nil }
        return child
    }

    private mutating func update(_ name: String, _ change: (inout Child) -> Void) {
        if var child = children[name] {
            change(&child)
            children[name] = child
        }
    }

    private mutating func emit(_ action: Action) { actions.append(action) }

    private mutating func log(_ level: Logger.Level, _ message: String, _ metadata: [String: String] = [:]) {
        emit(.log(LogRecord(level: level, message: message, metadata: metadata)))
    }

    private mutating func takeActions() -> [Action] {
        defer { actions.removeAll(keepingCapacity: true) }
        return actions
    }
}
