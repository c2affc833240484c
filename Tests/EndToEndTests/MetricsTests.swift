import Foundation
import GatewayProtocol
import LeaseInventory
import Telemetry
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The Prometheus expositions of a supervisor, its gateway and a worker after real traffic,
/// fetched with curl and checked by promtool, as an operator's scrape and CI would.
@Suite(
    "Prometheus metrics",
    .serialized, .timeLimit(.minutes(3)),
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool"), "needs promtool (Debian's prometheus; scripts/install-deps.sh installs it)")
)
struct MetricsTests {
    let vps = SampleInventory.Entry("vps-metrics-1", mac: "52:54:00:cc:00:01", ip: "10.8.0.1")

    /// `GET /metrics` with curl: the status line's code and the body.
    func scrape(_ cluster: Cluster, _ address: String, path: String = "/metrics") async throws -> (code: String, body: String) {
        let out = cluster.directory + "/scrape-\(UInt32.random(in: 0...UInt32.max))"
        let curl = try cluster.spawn(name: "curl", executable: "/usr/bin/curl", arguments: ["-s", "-o", out, "-w", "%{http_code}", "--max-time", "10", "http://\(address)\(path)"], environment: [:])
        _ = await curl.waitForExit(timeout: .seconds(20))
        return (curl.log, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    /// `promtool check metrics` on `exposition`: its exit status and what it said.
    func promtool(_ cluster: Cluster, _ exposition: String) async throws -> (status: Int32?, output: String) {
        let file = cluster.directory + "/exposition-\(UInt32.random(in: 0...UInt32.max)).txt"
        try exposition.write(toFile: file, atomically: true, encoding: .utf8)
        let check = try cluster.spawn(name: "promtool", executable: "/bin/sh", arguments: ["-c", "/usr/bin/promtool check metrics < \(file)"], environment: [:])
        return (await check.waitForExit(timeout: .seconds(30)), check.log)
    }

    @Test("after lookups and a worker restart, the supervisor, gateway and worker expositions pass promtool and count what happened")
    func expositionsAfterTraffic() async throws {
        try await Cluster.with { cluster in
            let gatewayMetrics = "127.0.0.1:\(try cluster.reservePort())"
            let workerMetrics = "127.0.0.1:\(try cluster.reservePort())"
            let supervisorMetrics = "127.0.0.1:\(try cluster.reservePort())"
            try """
                gateway:
                  listen: 127.0.0.1:\(cluster.port)
                  admin_socket: \(cluster.adminSocket)
                  journal: \(cluster.journal)
                  dhcp_leases: "off"
                  metrics_address: \(gatewayMetrics)
                environments:
                  - name: production
                    inventory: sqlite:\(try cluster.inventory("production", [vps]))
                    instance_id: production-1
                    metrics_address: \(workerMetrics)
                supervisor:
                  notify_directory: \(cluster.directory)/notify
                  restart_initial_delay: 100ms
                  restart_max_delay: 500ms
                  shutdown_grace: 5s
                  log_format: text
                  metrics_address: \(supervisorMetrics)
                """.write(toFile: cluster.directory + "/config.yaml", atomically: true, encoding: .utf8)
            let notify = try NotifySocket(path: cluster.directory + "/supervisor-notify.sock")
            let supervisor = try cluster.spawn(
                name: "supervisor", arguments: ["supervise", "--config", cluster.directory + "/config.yaml"],
                environment: ["GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path]
            )
            #expect(await notify.waitFor("READY=1"))
            try await cluster.waitForClients(["production-1"])
            for _ in 0..<3 { #expect(try await cluster.lookup(mac: vps.mac).owner?.vpsID == "vps-metrics-1") }
            #expect(try await cluster.lookup(mac: "52:54:00:cc:99:99").response.outcome == .notFound)

            // A worker killed and restarted by the supervisor counts as a restart.
            let worker = try #require(processes(commandLineContaining: cluster.directory).first { $0.command.contains("worker --env production") })
            kill(worker.pid, SIGKILL)
            #expect(await notify.waitFor("production ready (restarts 1)"))
            try await cluster.waitForClients(["production-1"])
            #expect(try await cluster.lookup(mac: vps.mac).owner?.vpsID == "vps-metrics-1")

            let gateway = try await scrape(cluster, gatewayMetrics)
            #expect(gateway.code == "200")
            for series in [
                #"vps_gateway_calls_total{method="FindVPSByLease",outcome="ok"} 4"#,
                #"vps_gateway_calls_total{method="FindVPSByLease",outcome="not_found"} 1"#,
                #"vps_gateway_clients{environment="production"} 1"#,
                #"vps_gateway_call_duration_seconds_count{method="FindVPSByLease"} 5"#,
                #"vps_gateway_stream_messages_total{direction="in",type="response"} 5"#,
                #"vps_gateway_stream_messages_total{direction="out",type="request"} 5"#,
                "vps_gateway_journal_commit_duration_seconds_count ",
            ] {
                #expect(gateway.body.contains(series), "gateway exposition lacks \(series):\n\(gateway.body.prefix(3000))")
            }
            // The restarted worker's own counters start again: the one lookup after the restart.
            let workerExposition = try await scrape(cluster, workerMetrics)
            #expect(workerExposition.body.contains(#"vps_gateway_worker_requests_total{method="FindVPSByLease",code="ok"} 1"#), "\(workerExposition.body.prefix(3000))")
            #expect(workerExposition.body.contains(#"vps_gateway_worker_streams{gateway="http://127.0.0.1:\#(cluster.port)",state="registered"} 1"#), "\(workerExposition.body.prefix(3000))")
            #expect(workerExposition.body.contains("vps_gateway_worker_request_duration_seconds_bucket"))
            let supervisorExposition = try await scrape(cluster, supervisorMetrics)
            #expect(supervisorExposition.body.contains(#"vps_gateway_supervisor_child_restarts_total{child="worker-production"} 1"#), "\(supervisorExposition.body)")
            #expect(supervisorExposition.body.contains(#"vps_gateway_supervisor_child_up{child="gateway"} 1"#))
            #expect(supervisorExposition.body.contains(#"vps_gateway_supervisor_child_up{child="worker-production"} 1"#))

            for (name, exposition) in [("gateway", gateway.body), ("worker", workerExposition.body), ("supervisor", supervisorExposition.body)] {
                let checked = try await promtool(cluster, exposition)
                #expect(checked.status == 0, "promtool check metrics on the \(name)'s exposition: \(checked.output)")
            }
            #expect(try await scrape(cluster, gatewayMetrics, path: "/other").code == "404")
            supervisor.signal(SIGTERM)
            #expect(await supervisor.waitForExit(timeout: .seconds(20)) == 0)
        }
    }

    @Test("the shipped alert rules pass promtool check rules, and their unit tests pass promtool test rules")
    func alertRules() async throws {
        try await Cluster.with { cluster in
            let repository = PythonClients.repository
            for arguments in [["check", "rules", repository + "/examples/prometheus-alerts.yaml"], ["test", "rules", repository + "/Tests/Prometheus/alerts-test.yaml"]] {
                let check = try cluster.spawn(name: "promtool", executable: "/usr/bin/promtool", arguments: arguments, environment: [:])
                #expect(await check.waitForExit(timeout: .seconds(60)) == 0, "promtool \(arguments.joined(separator: " ")): \(check.log)")
                #expect(check.log.contains("SUCCESS"), "\(check.log)")
            }
            let dashboard = try Data(contentsOf: URL(fileURLWithPath: repository + "/examples/grafana-dashboard.json"))
            let parsed = try #require(try JSONSerialization.jsonObject(with: dashboard) as? [String: Any])
            let panels = try #require(parsed["panels"] as? [[String: Any]])
            // Every panel's query names only metrics the product exports.
            let exported = Set(Metric.all.map(\.name))
            for panel in panels {
                for target in (panel["targets"] as? [[String: Any]]) ?? [] {
                    let expression = target["expr"] as? String ?? ""
                    let names = expression.matches(of: /vps_gateway_[a-z_]+/).map { String($0.output) }
                    #expect(!names.isEmpty, "panel \(panel["title"] ?? "?") queries no vps_gateway metric")
                    for name in names {
                        #expect(exported.contains { name == $0 || name.hasPrefix($0 + "_") }, "panel \(panel["title"] ?? "?") queries \(name), which is not exported")
                    }
                }
            }
        }
    }

}
