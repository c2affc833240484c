#if canImport(Glibc)
import Glibc
#endif
@testable import Supervision
import Testing

/// The supervisor's rules on their own: events in, actions out, the clock a value.
@Suite("Supervisor state machine")
struct SupervisorMachineTests {
    typealias Machine = SupervisorMachine

    /// A machine and the instant it is at; each call returns what the machine asked for.
    struct Harness {
        var machine: Machine
        var now = ContinuousClock.now
        /// The current id of each child, from the sockets the machine opened.
        var ids: [String: Machine.ChildID] = [:]
        var runs: [String: Int] = [:]

        init(workers: [String] = ["production", "beta"], policy: (inout SupervisorConfiguration.Policy) -> Void = { _ in }) {
            var configuration = SupervisorConfiguration()
            policy(&configuration.supervisor)
            configuration.environments = workers.map { .init(name: $0) }
            machine = Machine(
                configuration: configuration, specs: [Self.spec("gateway")] + workers.map { Self.spec("worker-\($0)") },
                configurationPath: "/etc/vps-gateway/supervisor.yaml", systemdWatchdog: .seconds(5), random: { 0.5 }
            )
        }

        static func spec(_ name: String, arguments: [String] = []) -> ChildSpec {
            ChildSpec(
                name: name, role: name == "gateway" ? .gateway : .worker(environment: String(name.dropFirst("worker-".count))),
                executable: "/usr/bin/vps-gateway", arguments: arguments, environment: [:], notifySocket: "/run/notify/\(name).sock"
            )
        }

        mutating func start() -> [Machine.Action] { note(machine.start(now: now)) }

        mutating func send(_ event: Machine.Event) -> [Machine.Action] { note(machine.handle(event, now: now)) }

        mutating func advance(_ duration: Duration) { now += duration }

        /// Remembers the ids and runs the actions name.
        private mutating func note(_ actions: [Machine.Action]) -> [Machine.Action] {
            for action in actions {
                switch action {
                case .openNotifySocket(let id, _): ids[id.name] = id
                case .spawn(let id, let run, _): runs[id.name] = run
                default: break
                }
            }
            return actions
        }

        func id(_ name: String) -> Machine.ChildID { ids[name]! }

        /// The socket is made, the child spawned and its pid known.
        mutating func bringUp(_ name: String, ready: Bool = true) {
            _ = send(.notifySocketOpened(id(name)))
            _ = send(.started(id(name), run: runs[name]!, pid: 100))
            if ready { _ = send(.notified(id(name), ["READY": "1"])) }
        }

        /// The gateway and every worker up and ready.
        mutating func bringUpAll() {
            _ = start()
            bringUp("gateway")
            for name in machine.children.keys.sorted() where name != "gateway" { bringUp(name) }
        }

        mutating func exit(_ name: String, _ ending: Machine.ChildEnding = .exited(code: 1)) -> [Machine.Action] {
            send(.exited(id(name), run: runs[name]!, ending))
        }
    }

    static func signals(_ actions: [Machine.Action]) -> [String] {
        actions.compactMap {
            guard case .signal(let id, let signal, _) = $0 else { return nil }
            return "\(id.name) \(signal)"
        }
    }

    static func sockets(_ actions: [Machine.Action]) -> [String] {
        actions.compactMap {
            guard case .openNotifySocket(let id, _) = $0 else { return nil }
            return id.name
        }
    }

    static func timers(_ actions: [Machine.Action]) -> [(Machine.Timer, ContinuousClock.Instant)] {
        actions.compactMap {
            guard case .schedule(let timer, let at) = $0 else { return nil }
            return (timer, at)
        }
    }

    static func told(_ actions: [Machine.Action]) -> [Machine.SystemdMessage] {
        actions.compactMap {
            guard case .notifySystemd(let message) = $0 else { return nil }
            return message
        }
    }

    static func logs(_ actions: [Machine.Action]) -> [String] {
        actions.compactMap {
            switch $0 {
            case .log(let record): record.message
            case .signal(_, _, let record?): record.message
            default: nil
            }
        }
    }

    static func finish(_ actions: [Machine.Action]) -> SupervisorError?? {
        for case .finish(let error) in actions { return .some(error) }
        return .none
    }

    @Test("only the gateway starts at first; the workers' sockets open once it is ready, and READY=1 follows")
    func workersWaitForTheGateway() {
        var harness = Harness()
        let first = harness.start()
        #expect(Self.sockets(first) == ["gateway"])
        #expect(first.contains { if case .writeEnvironmentsFile = $0 { true } else { false } })
        #expect(Self.timers(first).map(\.0) == [.systemdWatchdog])

        let spawned = harness.send(.notifySocketOpened(harness.id("gateway")))
        #expect(spawned.contains(.spawn(harness.id("gateway"), run: 1, Harness.spec("gateway"))))
        #expect(Self.timers(spawned).map(\.0) == [.childWatchdog(harness.id("gateway"), run: 1)])
        _ = harness.send(.started(harness.id("gateway"), run: 1, pid: 42))
        #expect(harness.machine.statusLine == "gateway starting")

        let ready = harness.send(.notified(harness.id("gateway"), ["READY": "1", "STATUS": "gateway: clients: 0"]))
        #expect(Self.sockets(ready) == ["worker-production", "worker-beta"])
        #expect(Self.told(ready) == [.ready(status: "gateway ready, production starting, beta starting; clients: 0")])
        let answered = harness.send(.systemdAnswered(.ready(status: "x"), delivered: true))
        #expect(Self.logs(answered) == ["supervisor ready"])
    }

    @Test("a gateway that asks for more start time (its replay) lets the workers start, and systemd is asked for the time")
    func extendTimeoutBeforeReadyIsForwarded() {
        var harness = Harness()
        _ = harness.start()
        harness.bringUp("gateway", ready: false)
        let extended = harness.send(.notified(harness.id("gateway"), ["EXTEND_TIMEOUT_USEC": "30000000"]))
        #expect(Self.told(extended).contains(.extendTimeout(.seconds(30))))
        #expect(Self.sockets(extended) == ["worker-production", "worker-beta"])

        _ = harness.send(.notified(harness.id("gateway"), ["READY": "1"]))
        let late = harness.send(.notified(harness.id("gateway"), ["EXTEND_TIMEOUT_USEC": "30000000"]))
        #expect(!Self.told(late).contains(.extendTimeout(.seconds(30))), "after READY=1 the unit's start is over")
    }

    @Test("a worker that exits is restarted after its backoff, as a new run, and the status counts the restart")
    func exitedWorkerIsRestarted() {
        var harness = Harness()
        harness.bringUpAll()
        let exited = harness.exit("worker-beta")
        #expect(Self.logs(exited).contains("child exited"))
        #expect(exited.contains(.childRestarted("worker-beta")))
        let restart = Self.timers(exited)
        #expect(restart.map(\.0) == [.restart(harness.id("worker-beta"), run: 1)])
        #expect(restart.first?.1 == harness.now + .milliseconds(100))
        #expect(harness.machine.statusLine == "gateway ready, production ready, beta backoff (restarts 1)")
        #expect(Self.told(exited) == [.status("gateway ready, production ready, beta backoff (restarts 1)")])

        harness.advance(.milliseconds(100))
        let respawned = harness.send(.timer(.restart(harness.id("worker-beta"), run: 1)))
        #expect(respawned.contains(.spawn(harness.id("worker-beta"), run: 2, Harness.spec("worker-beta"))))
        #expect(harness.machine.statusLine == "gateway ready, production ready, beta starting (restarts 1)")

        // The first run's late events are not the second's.
        let stale = harness.send(.exited(harness.id("worker-beta"), run: 1, .exited(code: 0)))
        #expect(stale.isEmpty)
    }

    @Test("a crash-looping worker is given up and the rest run on; the status says so")
    func crashLoopingWorkerIsGivenUp() {
        var harness = Harness { $0.intensity = 2 }
        harness.bringUpAll()
        for _ in 0..<2 {
            _ = harness.exit("worker-beta")
            harness.advance(.seconds(1))
            _ = harness.send(.timer(.restart(harness.id("worker-beta"), run: harness.runs["worker-beta"]!)))
        }
        let gaveUp = harness.exit("worker-beta")
        #expect(Self.logs(gaveUp).contains("child given up"))
        #expect(gaveUp.contains(.closeNotifySocket(harness.id("worker-beta"))))
        #expect(Self.finish(gaveUp) == nil)
        #expect(harness.machine.statusLine == "gateway ready, production ready, beta failed (restarts 2)")
    }

    @Test("giving up the gateway, or a worker with escalate set, stops the rest and ends the run with an error")
    func givingUpEscalates() {
        var harness = Harness { $0.intensity = 0 }
        harness.bringUpAll()
        let gaveUp = harness.exit("gateway")
        #expect(Self.signals(gaveUp).sorted() == ["worker-beta \(SIGTERM)", "worker-production \(SIGTERM)"])
        #expect(Self.told(gaveUp) == [.stopping(status: "stopping: the gateway exceeded its restart intensity")])
        _ = harness.exit("worker-beta", .exited(code: 0))
        let done = harness.exit("worker-production", .exited(code: 0))
        #expect(Self.finish(done) == .some(SupervisorError(code: .childGaveUp, message: "the gateway exceeded its restart intensity")))

        var escalating = Harness { $0.intensity = 0; $0.escalate = true }
        escalating.bringUpAll()
        let stopped = escalating.exit("worker-beta")
        #expect(Self.signals(stopped) == ["worker-production \(SIGTERM)"])
        _ = escalating.exit("worker-production", .exited(code: 0))
        let finished = escalating.exit("gateway", .exited(code: 0))
        #expect(Self.finish(finished) == .some(SupervisorError(code: .childGaveUp, message: "child worker-beta exceeded its restart intensity and escalate is set")))
    }

    @Test("a child that stops pinging is aborted when its deadline passes, and killed a grace later; pings move the deadline")
    func childWatchdogAbortsThenKills() {
        var harness = Harness(workers: ["production"]) { $0.childWatchdog = .seconds(10); $0.shutdownGrace = .seconds(4) }
        harness.bringUpAll()
        let id = harness.id("worker-production")
        harness.advance(.seconds(6))
        _ = harness.send(.notified(id, ["WATCHDOG": "1"]))
        harness.advance(.seconds(4))
        // Its first deadline came, but a ping moved it: the timer is set again for the new one.
        let early = harness.send(.timer(.childWatchdog(id, run: 1)))
        #expect(Self.signals(early).isEmpty)
        #expect(Self.timers(early).map(\.1) == [harness.now + .seconds(6)])

        harness.advance(.seconds(6))
        let stale = harness.send(.timer(.childWatchdog(id, run: 1)))
        #expect(Self.signals(stale) == ["worker-production \(SIGABRT)", "worker-production \(SIGCONT)"])
        #expect(Self.timers(stale).map(\.0) == [.abortOverdue(id, run: 1)])
        #expect(Self.timers(stale).map(\.1) == [harness.now + .seconds(4)])

        harness.advance(.seconds(4))
        let overdue = harness.send(.timer(.abortOverdue(id, run: 1)))
        #expect(Self.signals(overdue) == ["worker-production \(SIGKILL)"])
        #expect(Self.logs(overdue) == ["child did not end after SIGABRT; killed"])

        // The abort is the child's exit like any other: it is restarted.
        let exited = harness.exit("worker-production", .signaled(SIGKILL))
        #expect(Self.timers(exited).map(\.0) == [.restart(id, run: 1)])
    }

    @Test("systemd's watchdog is pinged only while every running child pings its own")
    func systemdWatchdogFollowsTheChildren() {
        var harness = Harness(workers: ["production"]) { $0.childWatchdog = .seconds(10) }
        harness.bringUpAll()
        harness.advance(.seconds(5))
        let healthy = harness.send(.timer(.systemdWatchdog))
        #expect(Self.told(healthy) == [.watchdog])
        #expect(Self.timers(healthy).map(\.0) == [.systemdWatchdog])

        _ = harness.send(.notified(harness.id("gateway"), ["WATCHDOG": "1"]))
        harness.advance(.seconds(6))
        let hung = harness.send(.timer(.systemdWatchdog))
        #expect(Self.told(hung).isEmpty, "the worker has not pinged for 11 s")
        #expect(Self.timers(hung).map(\.0) == [.systemdWatchdog])
    }

    @Test("a stop sends SIGTERM to the workers, then to the gateway once they ended, and finishes after the gateway")
    func orderedStop() {
        var harness = Harness { $0.shutdownGrace = .seconds(3) }
        harness.bringUpAll()
        let stopping = harness.send(.terminate)
        #expect(Self.signals(stopping).sorted() == ["worker-beta \(SIGTERM)", "worker-production \(SIGTERM)"])
        #expect(Self.told(stopping) == [.stopping(status: "stopping")])
        #expect(stopping.contains(.armShutdownLimit(.seconds(11))))
        #expect(Self.timers(stopping).map(\.0) == [.stopGrace(stage: 0)])

        _ = harness.exit("worker-production", .exited(code: 0))
        harness.advance(.seconds(3))
        let grace = harness.send(.timer(.stopGrace(stage: 0)))
        #expect(Self.signals(grace) == ["worker-beta \(SIGKILL)"])
        #expect(Self.logs(grace) == ["child did not stop within the grace period; killed"])

        let gatewayStage = harness.exit("worker-beta", .signaled(SIGKILL))
        #expect(Self.signals(gatewayStage) == ["gateway \(SIGTERM)"])
        #expect(Self.timers(gatewayStage).map(\.0) == [.stopGrace(stage: 1)])
        #expect(Self.finish(gatewayStage) == nil)
        #expect(gatewayStage.allSatisfy { if case .schedule(.restart, _) = $0 { false } else { true } }, "a stopped child is not restarted")

        let done = harness.exit("gateway", .exited(code: 0))
        #expect(Self.finish(done) == .some(nil))
        #expect(Self.told(done).isEmpty, "nothing more is reported once STOPPING=1 was")
    }

    @Test("a second SIGTERM during the stop kills every child at once")
    func secondSignalKillsEverything() {
        var harness = Harness()
        harness.bringUpAll()
        _ = harness.send(.terminate)
        let hurried = harness.send(.terminate)
        #expect(Self.signals(hurried).sorted() == ["gateway \(SIGKILL)", "worker-beta \(SIGKILL)", "worker-production \(SIGKILL)"])
    }

    @Test("a child told to stop before its pid was known gets SIGTERM once it is")
    func stopBeforeThePidIsKnown() {
        var harness = Harness(workers: [])
        _ = harness.start()
        _ = harness.send(.notifySocketOpened(harness.id("gateway")))
        let stopping = harness.send(.terminate)
        #expect(Self.signals(stopping).isEmpty)
        let started = harness.send(.started(harness.id("gateway"), run: 1, pid: 7))
        #expect(Self.signals(started) == ["gateway \(SIGTERM)"])
        #expect(Self.finish(harness.exit("gateway", .exited(code: 0))) == .some(nil))
    }

    @Test("a reload starts an added worker, stops a removed one, and replaces a changed one only after its old run ended")
    func reloadAddsRemovesAndReplaces() {
        var harness = Harness(workers: ["production", "beta"])
        harness.bringUpAll()
        let reloading = harness.send(.reload)
        #expect(Self.told(reloading) == [.reloading])
        #expect(reloading.contains(.loadConfiguration))

        var configuration = SupervisorConfiguration()
        configuration.environments = [.init(name: "production"), .init(name: "dev")]
        let changedSpec = Harness.spec("worker-production", arguments: ["--changed"])
        let oldProduction = harness.id("worker-production")
        let applied = harness.send(.configurationLoaded(.success(.init(
            configuration: configuration, specs: [Harness.spec("gateway"), changedSpec, Harness.spec("worker-dev")]
        ))))
        #expect(applied.contains(.writeEnvironmentsFile(configuration)))
        #expect(Self.signals(applied) == ["gateway \(SIGHUP)", "worker-beta \(SIGTERM)", "worker-production \(SIGTERM)"])
        #expect(Self.sockets(applied) == ["worker-dev"])
        #expect(Self.told(applied) == [.ready(status: "gateway ready, production ready, beta ready, dev starting")])

        _ = harness.exit("worker-beta", .exited(code: 0))
        #expect(harness.machine.children["worker-beta"] == nil)
        let replaced = harness.send(.exited(oldProduction, run: 1, .exited(code: 0)))
        #expect(replaced.contains(.closeNotifySocket(oldProduction)))
        #expect(Self.sockets(replaced) == ["worker-production"])
        #expect(harness.id("worker-production") != oldProduction)
        let spawned = harness.send(.notifySocketOpened(harness.id("worker-production")))
        #expect(spawned.contains(.spawn(harness.id("worker-production"), run: 1, changedSpec)))
        #expect(harness.machine.statusLine == "gateway ready, production starting, dev starting")
    }

    @Test("a refused reload leaves the children alone, says why in the status, and READY=1 ends the reload")
    func refusedReloadIsReported() {
        var harness = Harness()
        harness.bringUpAll()
        _ = harness.send(.reload)
        let refused = harness.send(.configurationLoaded(.failure(.init(problem: "'x.yaml' has 1 problem(s):\n  - bad"))))
        #expect(Self.signals(refused).isEmpty)
        #expect(Self.logs(refused) == ["reload refused; the running children stay as they are"])
        #expect(Self.told(refused) == [.ready(status: "gateway ready, production ready, beta ready; last reload refused: 'x.yaml' has 1 problem(s):")])
    }

    @Test("a READY=1 systemd's full queue dropped is sent again after a pause")
    func droppedReadyIsSentAgain() {
        var harness = Harness(workers: [])
        _ = harness.start()
        harness.bringUp("gateway")
        let dropped = harness.send(.systemdAnswered(.ready(status: "gateway ready"), delivered: false))
        #expect(Self.timers(dropped).map(\.0) == [.reportAgain])
        #expect(Self.logs(dropped).isEmpty)
        harness.advance(.milliseconds(500))
        let again = harness.send(.timer(.reportAgain))
        #expect(Self.told(again) == [.ready(status: "gateway ready")])
    }

    @Test("with ready_when all-workers, READY=1 waits for every worker")
    func readyWhenAllWorkers() {
        var harness = Harness(workers: ["production"]) { $0.readyWhen = "all-workers" }
        _ = harness.start()
        harness.bringUp("gateway")
        #expect(Self.told(harness.send(.notifySocketOpened(harness.id("worker-production")))).allSatisfy {
            if case .ready = $0 { false } else { true }
        })
        _ = harness.send(.started(harness.id("worker-production"), run: 1, pid: 9))
        let ready = harness.send(.notified(harness.id("worker-production"), ["READY": "1"]))
        #expect(Self.told(ready) == [.ready(status: "gateway ready, production ready")])
    }
}

@Suite("Notify backlog")
struct NotifyBacklogTests {
    @Test("past the limit a child's messages are dropped, the first drop is flagged once, and the count comes back when its backlog is handled")
    func floodIsBoundedAndCounted() {
        var backlog = NotifyBacklog<String>(limit: 3)
        #expect((0..<3).map { _ in backlog.admit("gateway") } == [.queue, .queue, .queue])
        #expect(backlog.admit("gateway") == .dropFirst(limit: 3))
        #expect(backlog.admit("gateway") == .drop)
        #expect(backlog.admit("worker-beta") == .queue, "another child's messages are not held up")

        #expect(backlog.handled("gateway") == nil)
        #expect(backlog.admit("gateway") == .queue, "room again once one was handled")
        #expect(backlog.handled("gateway") == nil)
        #expect(backlog.handled("gateway") == nil)
        #expect(backlog.handled("gateway") == 2, "both dropped messages are told once the backlog is empty")
        #expect(backlog.handled("worker-beta") == nil)
        #expect(backlog.waiting == 0, "nothing is kept for children without a backlog")
        #expect(backlog.admit("gateway") == .queue)
        #expect(backlog.handled("gateway") == nil, "the drop count started over")
    }
}
