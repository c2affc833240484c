import Foundation
import GatewayProtocol
import LeaseInventory
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The supervisor with real children (a gateway and workers), reading its own sd_notify
/// messages from a socket the test owns.
@Suite("Supervisor", .serialized, .timeLimit(.minutes(3)))
struct SupervisorTests {
    /// Writes a configuration for `environments` (name → inventory path) and starts the
    /// supervisor on it.
    func startSupervisor(
        _ cluster: Cluster,
        environments: [(String, String)],
        policy: String = "",
        notify: NotifySocket,
        crashReporter: Bool = false
    ) throws -> TestProcess {
        try writeConfiguration(cluster, environments: environments, policy: policy)
        return try cluster.spawn(
            name: "supervisor",
            arguments: ["supervise", "--config", cluster.directory + "/config.yaml"],
            environment: ["GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"],
            crashReporter: crashReporter
        )
    }

    func writeConfiguration(_ cluster: Cluster, environments: [(String, String)], policy: String = "") throws {
        var text = """
            gateway:
              listen: 127.0.0.1:\(cluster.port)
              admin_socket: \(cluster.adminSocket)
              journal: \(cluster.journal)
              dhcp_leases: "off"
            environments:

            """
        for (name, inventory) in environments {
            text += "  - name: \(name)\n    inventory: sqlite:\(inventory)\n    instance_id: \(name)-1\n"
        }
        text += """
            supervisor:
              notify_directory: \(cluster.directory)/notify
              restart_initial_delay: 100ms
              restart_max_delay: 500ms
              child_watchdog: 2s
              shutdown_grace: 5s
              log_format: text
            \(policy)
            """
        try text.write(toFile: cluster.directory + "/config.yaml", atomically: true, encoding: .utf8)
    }

    /// The pid of this cluster's running child `role` (like `worker --env beta`), from /proc.
    /// Other suites run gateways and workers in parallel; every child of this supervisor has
    /// a path inside the cluster's directory on its command line.
    func pid(of role: String, in cluster: Cluster) -> pid_t? {
        processes(commandLineContaining: cluster.directory).first {
            $0.command.contains(TestBinary.path) && $0.command.contains(role) && !$0.command.contains("supervise")
        }?.pid
    }

    @Test("READY=1 once the gateway is ready; a worker killed with SIGKILL is restarted; SIGTERM stops every child and exits 0")
    func restartAndStop() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try startSupervisor(cluster, environments: [
                ("production", try cluster.inventory("production")), ("beta", try cluster.inventory("beta")),
            ], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1", "beta-1"])
            let beta = try #require(pid(of: "worker --env beta", in: cluster))
            kill(beta, SIGKILL)
            #expect(await notify.waitFor("beta ready (restarts 1)"))
            try await cluster.waitForClients(["production-1", "beta-1"])
            #expect(pid(of: "worker --env beta", in: cluster) != beta)
            #expect(await notify.waitFor("WATCHDOG=1"), "pinged at half of WATCHDOG_USEC while every child pings")
            supervisor.signal(SIGTERM)
            #expect(await supervisor.waitForExit(timeout: .seconds(20)) == 0)
            #expect(notify.messages.contains { $0.hasPrefix("STOPPING=1") })
            #expect(pid(of: "worker --env", in: cluster) == nil && pid(of: "gateway --listen", in: cluster) == nil, "no child outlives the supervisor")
            #expect(supervisor.log.contains("child exited child=worker-beta how=\"killed by signal 9\""))
            #expect(!supervisor.log.contains("stream to the gateway failed"), "workers start once the gateway listens")
            for child in ["gateway", "worker-production", "worker-beta"] {
                #expect(supervisor.log.contains("child exited child=\(child) how=\"exited with code 0\""), "\(child) stops cleanly on SIGTERM")
            }
        }
    }

    @Test("while the gateway replays its journal at start, the supervisor asks systemd for more time (EXTEND_TIMEOUT_USEC) before READY=1")
    func startupExtension() async throws {
        try await Cluster.with { cluster in
            let generated = try await cluster.run(["journal", "generate", "--journal", cluster.journal, "--count", "200", "--method", "Ping"])
            #expect(generated.status == 0, "\(generated.output)")
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            let messages = notify.messages
            let extended = messages.firstIndex { $0.hasPrefix("EXTEND_TIMEOUT_USEC=") }
            let ready = messages.firstIndex { $0.hasPrefix("READY=1") }
            #expect(extended != nil && ready != nil && extended! < ready!, "\(messages)")
            supervisor.signal(SIGTERM)
            #expect(await supervisor.waitForExit(timeout: .seconds(20)) == 0)
        }
    }

    @Test("a gateway that keeps failing is given up and the supervisor exits 75 even without escalate")
    func gatewayCrashLoopEscalates() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            try writeConfiguration(cluster, environments: [("production", try cluster.inventory("production"))], policy: "  intensity: 2")
            let path = cluster.directory + "/config.yaml"
            let text = try String(contentsOfFile: path, encoding: .utf8)
                .replacingOccurrences(of: "  dhcp_leases: \"off\"\n", with: "  dhcp_leases: \"off\"\n  extra_arguments: [\"--no-such-flag\"]\n")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let supervisor = try cluster.spawn(
                name: "supervisor", arguments: ["supervise", "--config", path],
                environment: ["GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path]
            )
            #expect(await supervisor.waitForExit(timeout: .seconds(30)) == 75)
            #expect(supervisor.log.contains("child given up child=gateway"))
            #expect(!notify.messages.contains { $0.hasPrefix("READY=1") })
            #expect(pid(of: "worker --env", in: cluster) == nil, "workers never started without a listening gateway")
        }
    }

    @Test("a crash-looping worker is given up after the intensity limit, and with escalate the supervisor exits 75")
    func crashLoop() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let garbage = cluster.directory + "/garbage.sqlite3"
            _ = FileManager.default.createFile(atPath: garbage, contents: Data(repeating: 0x41, count: 4096))
            let supervisor = try startSupervisor(cluster, environments: [
                ("production", try cluster.inventory("production")), ("broken", garbage),
            ], policy: "  intensity: 3\n  intensity_period: 60s\n  escalate: true", notify: notify)
            #expect(await supervisor.waitForExit(timeout: .seconds(60)) == 75)
            #expect(supervisor.log.contains("child given up child=worker-broken") && supervisor.log.contains("restarts=3"))
            #expect(supervisor.log.contains("exceeded its restart intensity"))
            #expect(pid(of: "worker --env", in: cluster) == nil && pid(of: "gateway --listen", in: cluster) == nil)
        }
    }

    @Test("children do not outlive a supervisor killed with SIGKILL")
    func lifeline() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            supervisor.signal(SIGKILL)
            let gone = await poll(timeout: .seconds(15)) { pid(of: "worker --env", in: cluster) == nil && pid(of: "gateway --listen", in: cluster) == nil }
            #expect(gone, "left: \(pid(of: "worker --env", in: cluster).map { String($0) } ?? "-") \(pid(of: "gateway --listen", in: cluster).map { String($0) } ?? "-")")
        }
    }

    @Test("a child that stops pinging is killed with SIGABRT and restarted")
    func childWatchdog() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            // READY=1 means the gateway is ready; the worker starts after it.
            try await cluster.waitForClients(["production-1"])
            let worker = try #require(pid(of: "worker --env production", in: cluster))
            kill(worker, SIGSTOP)  // stuck: no more WATCHDOG=1
            // SIGABRT (the Swift runtime may spend a while printing a backtrace), then SIGKILL
            // after the 5 s grace at the latest.
            let replaced = await poll(timeout: .seconds(20)) {
                let current = pid(of: "worker --env production", in: cluster)
                return current != nil && current != worker
            }
            #expect(replaced)
            #expect(supervisor.log.contains("child stopped pinging its watchdog; killing it with SIGABRT child=worker-production"))
            #expect(supervisor.log.contains("killed by signal 6") || supervisor.log.contains("did not end after SIGABRT; killed"))
        }
    }

    @Test("a gateway aborted by the child watchdog, crash reporter on: it is restarted and listens again, and nothing of the old one is left")
    func abortedGatewayRestarts() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            // The product's own crash reporter setting (the supervisor's default for children).
            let supervisor = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify, crashReporter: true)
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1"])
            let gateway = try #require(pid(of: "gateway --listen", in: cluster))
            kill(gateway, SIGSTOP)  // stuck: no more WATCHDOG=1
            // The watchdog's SIGABRT starts the crash reporter, a child of the gateway holding
            // its sockets. Stopping it stands for a reporter that takes minutes.
            let reporter = await firstProcess(within: .seconds(20)) { $0.command.hasPrefix("swift-backtrace") && $0.parent == gateway }
            let reporterPID = try #require(reporter?.pid, "no crash reporter started:\n\(supervisor.log.suffix(2000))")
            kill(reporterPID, SIGSTOP)
            let replaced = await poll(timeout: .seconds(40)) {
                pid(of: "gateway --listen", in: cluster).map { $0 != gateway } ?? false
            }
            #expect(replaced, "\(supervisor.log.suffix(2000))")
            #expect(supervisor.log.contains("child stopped pinging its watchdog; killing it with SIGABRT child=gateway"))
            // Restarted and bound: the worker registers with the new gateway.
            try await cluster.waitForClients(["production-1"], timeout: .seconds(30))
            #expect(!isAlive(reporterPID), "the crash reporter went with the gateway's process group")
            #expect(processes(inGroup: gateway).isEmpty, "nothing of the old gateway's process group is left")
            #expect(!supervisor.log.contains("child given up"))
            supervisor.signal(SIGTERM)
            let status = await supervisor.waitForExit(timeout: .seconds(60))
            // A busy clean-clone run once saw a non-zero exit here; the log says which stop.
            #expect(status == 0, "supervisor exited \(String(describing: status)):\n\(supervisor.log.suffix(4000))")
        }
    }

    @Test("a service manager that stops reading its notify socket does not hang the supervisor: with the queue full, SIGTERM still ends in exit 0 within its bound")
    func fullNotifyQueueDoesNotHang() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            // From here on nothing reads: every WATCHDOG=1, STATUS= and the STOPPING=1 of the
            // stop meet a full queue. (libsystemd's blocking sd_notify hung here for good.)
            #expect(notify.fillQueue() > 0)
            supervisor.signal(SIGTERM)
            let status = await supervisor.waitForExit(timeout: .seconds(40))
            #expect(status == 0, "supervisor exited \(String(describing: status)):\n\(supervisor.log.suffix(3000))")
            #expect(!supervisor.log.contains("did not stop within its shutdown limit"))
        }
    }

    @Test("SIGTERM with a SIGSTOPped worker: the supervisor kills it after the grace and exits 0 within its bound")
    func stopWithStoppedChild() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            try writeConfiguration(cluster, environments: [("production", try cluster.inventory("production"))])
            let path = cluster.directory + "/config.yaml"
            // A short grace and a watchdog that does not fire first.
            let text = try String(contentsOfFile: path, encoding: .utf8)
                .replacingOccurrences(of: "shutdown_grace: 5s", with: "shutdown_grace: 1s")
                .replacingOccurrences(of: "child_watchdog: 2s", with: "child_watchdog: 60s")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let supervisor = try cluster.spawn(
                name: "supervisor", arguments: ["supervise", "--config", path],
                environment: ["GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path]
            )
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1"])
            let worker = try #require(pid(of: "worker --env production", in: cluster))
            kill(worker, SIGSTOP)
            let started = ContinuousClock.now
            supervisor.signal(SIGTERM)
            // Workers get 1 s, the gateway 1 s, then SIGKILL: well inside 10 s.
            #expect(await supervisor.waitForExit(timeout: .seconds(10)) == 0, "\(supervisor.log.suffix(2000))")
            #expect(ContinuousClock.now - started < .seconds(10))
            #expect(supervisor.log.contains("child did not stop within the grace period; killed child=worker-production"))
            #expect(pid(of: "worker --env", in: cluster) == nil && pid(of: "gateway --listen", in: cluster) == nil)
        }
    }

    @Test("a second supervisor on the same configuration refuses (73, naming the first one's pid) and the first keeps running untouched")
    func secondSupervisorRefused() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let first = try startSupervisor(cluster, environments: [("production", try cluster.inventory("production"))], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1"])
            let gateway = try #require(pid(of: "gateway --listen", in: cluster))
            let secondNotify = try NotifySocket(path: cluster.directory + "/second-notify.sock")
            let second = try cluster.spawn(
                name: "second-supervisor",
                arguments: ["supervise", "--config", cluster.directory + "/config.yaml"],
                environment: ["GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": secondNotify.path]
            )
            #expect(await second.waitForExit(timeout: .seconds(20)) == 73)
            #expect(second.log.contains("another supervisor (pid \(first.pid))"), "\(second.log)")
            // Three of the first one's child-watchdog intervals (2 s) without an abort: its
            // children's notify sockets are still its own.
            let aborted = await poll(timeout: .seconds(7)) { first.log.contains("stopped pinging its watchdog") }
            #expect(!aborted, "\(first.log.suffix(2000))")
            #expect(pid(of: "gateway --listen", in: cluster) == gateway)
            #expect(first.isRunning)
            #expect(FileManager.default.fileExists(atPath: cluster.directory + "/notify/gateway.sock"))
            _ = try await cluster.clients()
        }
    }

    @Test("SIGHUP adds, removes and restarts changed environments without restarting the others; a bad file keeps the running set")
    func reload() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let production = try cluster.inventory("production"), beta = try cluster.inventory("beta"), dev = try cluster.inventory("dev")
            let supervisor = try startSupervisor(cluster, environments: [("production", production), ("beta", beta)], notify: notify)
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1", "beta-1"])
            let productionPID = try #require(pid(of: "worker --env production", in: cluster))
            let gatewayPID = try #require(pid(of: "gateway --listen", in: cluster))

            try writeConfiguration(cluster, environments: [("production", production), ("dev", dev)])
            supervisor.signal(SIGHUP)
            #expect(await notify.waitFor("RELOADING=1"))
            try await cluster.waitForClients(["production-1", "dev-1"])
            #expect(pid(of: "worker --env production", in: cluster) == productionPID, "production was not touched")
            #expect(pid(of: "gateway --listen", in: cluster) == gatewayPID, "the gateway was not touched")
            #expect(pid(of: "worker --env beta", in: cluster) == nil)
            #expect(notify.messages.contains { $0.contains("MONOTONIC_USEC=") })

            // A changed environment (another inventory) restarts only that worker, which
            // reports on its notify socket again.
            let devPID = try #require(pid(of: "worker --env dev", in: cluster))
            try writeConfiguration(cluster, environments: [("production", production), ("dev", try cluster.inventory("dev-copy"))])
            supervisor.signal(SIGHUP)
            let devRestarted = await poll(timeout: .seconds(15)) {
                pid(of: "worker --env dev", in: cluster).map { $0 != devPID } ?? false
            }
            #expect(devRestarted)
            try await cluster.waitForClients(["production-1", "dev-1"])
            #expect(pid(of: "worker --env production", in: cluster) == productionPID, "production was not touched")
            let devReportsAgain = await poll(timeout: .seconds(10)) {
                notify.messages.last { $0.contains("STATUS=") }?.contains("dev ready") == true
            }
            #expect(devReportsAgain, "the restarted worker's READY reached the supervisor")

            try "environments: [oops".write(toFile: cluster.directory + "/config.yaml", atomically: true, encoding: .utf8)
            supervisor.signal(SIGHUP)
            #expect(await notify.waitFor("last reload refused"))
            #expect(pid(of: "worker --env production", in: cluster) == productionPID)
            #expect(pid(of: "worker --env dev", in: cluster) != nil)
        }
    }
}
