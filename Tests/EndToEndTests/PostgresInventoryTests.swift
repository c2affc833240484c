import Foundation
import GatewayProtocol
import Testing

/// Workers answering from a real PostgreSQL server in the platform's table shapes, through a
/// read-only role: what a production install does.
@Suite(
    "PostgreSQL inventories",
    .serialized, .timeLimit(.minutes(4)),
    .enabled(if: PostgresServer.isAvailable, "needs Debian's postgresql and setpriv (scripts/install-deps.sh installs them)")
)
struct PostgresInventoryTests {
    static let role = "vps_gateway"
    static let password = "lookup-\(UInt32.random(in: 0...UInt32.max))"

    /// A server with the platform database and a worker of `production` reading it.
    func withPlatform(
        gatewayArguments: [String] = ["--journal", "off"],
        workerNotify: Bool = false,
        _ body: (Cluster, PostgresServer, TestProcess, NotifySocket?) async throws -> Void
    ) async throws {
        try await Cluster.with { cluster in
            let server = try await PostgresServer.start(in: cluster)
            try await server.createPlatformDatabase("platform", role: Self.role, password: Self.password, rows: [
                ("vps-pg-1", "org-1", "52:54:00:aa:00:01", "10.7.0.1", false),
                ("vps-pg-upper", "org-1", "52:54:00:AA:00:02", "10.7.0.2", false),
                ("vps-pg-deleted", "org-2", "52:54:00:aa:00:03", "10.7.0.3", true),
            ])
            let passwordFile = cluster.directory + "/inventory-password"
            try (Self.password + "\n").write(toFile: passwordFile, atomically: true, encoding: .utf8)
            try await cluster.startGateway(gatewayArguments)
            let notify = workerNotify ? try NotifySocket(path: cluster.directory + "/worker-notify.sock") : nil
            let worker = try cluster.startWorker(
                environment: "production", inventory: server.url(user: Self.role, database: "platform"),
                ["--inventory-password-file", passwordFile], notifySocket: notify
            )
            try await cluster.waitForClients(["production-1"])
            try await body(cluster, server, worker, notify)
        }
    }

    @Test("found by MAC in any case, by IP, not found for a stranger, and a deleted VPS's lease does not count")
    func lookups() async throws {
        try await withPlatform { cluster, _, worker, _ in
            let found = try await cluster.lookup(mac: "52:54:00:AA:00:01")
            #expect(found.response.outcome == .ok && found.owner?.vpsID == "vps-pg-1", "\(found.response)")
            #expect(found.owner?.organizationID == "org-1")
            let upper = try await cluster.lookup(mac: "52:54:00:aa:00:02")
            #expect(upper.owner?.vpsID == "vps-pg-upper", "a MAC stored in upper case is found by its canonical form")
            let byIP = try await cluster.lookup(mac: "52:54:00:aa:99:99", ip: "10.7.0.1")
            #expect(byIP.owner?.vpsID == "vps-pg-1")
            let stranger = try await cluster.lookup(mac: "52:54:00:aa:99:98")
            #expect(stranger.response.outcome == .notFound)
            let deleted = try await cluster.lookup(mac: "52:54:00:aa:00:03")
            #expect(deleted.response.outcome == .notFound, "\(deleted.response)")
            #expect(!worker.log.contains(Self.password), "the password never reaches a log")
        }
    }

    @Test("a database stopped mid-run: lookups answer unavailable, the worker's STATUS says the database is unreachable, the journal keeps the call, and it completes once the database is back, without a worker restart")
    func databaseOutage() async throws {
        try await withPlatform(gatewayArguments: ["--max-attempts", "100"], workerNotify: true) { cluster, server, worker, notify in
            let notify = try #require(notify)
            #expect(try await cluster.lookup(mac: "52:54:00:aa:00:01").owner?.vpsID == "vps-pg-1")
            #expect(await notify.waitFor("READY=1"))
            await server.stop()
            let during = try await cluster.lookup(mac: "52:54:00:aa:00:01", timeoutMs: 1500)
            #expect(during.response.outcome != .ok && during.response.outcome != .notFound, "a database that is down is not 'not found': \(during.response)")
            #expect(await poll(timeout: .seconds(20)) { worker.log.contains("inventory database unreachable") }, "\(worker.log.suffix(3000))")
            // What `systemctl status` shows for the worker's unit (or the supervisor reads).
            #expect(await notify.waitFor("unreachable since", timeout: .seconds(20)), "\(notify.messages.suffix(3))")
            async let later = cluster.lookup(mac: "52:54:00:aa:00:01", timeoutMs: 60_000)
            try await server.startServer()
            let (response, owner) = try await later
            #expect(response.outcome == .ok, "\(response)")
            #expect(owner?.vpsID == "vps-pg-1")
            #expect(await poll(timeout: .seconds(40)) { worker.log.contains("inventory database reachable again") })
            let recovered = await poll(timeout: .seconds(20)) {
                notify.messages.last { $0.contains("STATUS=") }.map { !$0.contains("unreachable") } ?? false
            }
            #expect(recovered, "the STATUS line drops the outage once the database is back: \(notify.messages.suffix(3))")
            #expect(worker.isRunning, "the worker was not restarted")
        }
    }

    @Test("a wrong password stops the worker with 78 and an error naming the URL, without the password")
    func wrongPassword() async throws {
        try await Cluster.with { cluster in
            let server = try await PostgresServer.start(in: cluster)
            try await server.createPlatformDatabase("platform", role: Self.role, password: Self.password, rows: [])
            let passwordFile = cluster.directory + "/wrong-password"
            try "not-the-password".write(toFile: passwordFile, atomically: true, encoding: .utf8)
            try await cluster.startGateway(["--journal", "off"])
            let worker = try cluster.startWorker(
                environment: "production", inventory: server.url(user: Self.role, database: "platform"),
                ["--inventory-password-file", passwordFile]
            )
            let status = await worker.waitForExit(timeout: .seconds(30))
            #expect(status == 78, "\(worker.log)")
            #expect(worker.log.contains("postgres://\(Self.role)@127.0.0.1:\(server.port)/platform"), "\(worker.log)")
            #expect(worker.log.contains("password authentication failed"), "\(worker.log)")
            #expect(!worker.log.contains("not-the-password"))
        }
    }

    @Test("inventory check and check-config: usable with the missing index named; a missing table or a wrong password is 78; an unreachable server is 69 for the check and a warning for check-config; a password in the URL is refused")
    func inventoryCheck() async throws {
        try await Cluster.with { cluster in
            let server = try await PostgresServer.start(in: cluster)
            try await server.createPlatformDatabase("platform", role: Self.role, password: Self.password, rows: [])
            let passwordFile = cluster.directory + "/inventory-password"
            try Self.password.write(toFile: passwordFile, atomically: true, encoding: .utf8)
            let url = server.url(user: Self.role, database: "platform")
            let usable = try await cluster.run(["inventory", "check", url, "--password-file", passwordFile, "--json"])
            #expect(usable.status == 0, "\(usable.output)")
            #expect(usable.output.contains("\"usable\":true"), "\(usable.output)")
            // The platform database above has no plain index on dhcp_leases.mac_address beyond
            // its UNIQUE constraint's, so nothing is missing there; drop one to see it named.
            try await server.psql("DROP INDEX vps_instances_mac_address_idx", database: "platform")
            let missing = try await cluster.run(["inventory", "check", url, "--password-file", passwordFile])
            #expect(missing.status == 0)
            #expect(missing.output.contains("CREATE INDEX ON vps_instances (mac_address);"), "\(missing.output)")

            try await server.psql("CREATE DATABASE empty")
            try await server.psql("GRANT CONNECT ON DATABASE empty TO \(Self.role)")
            let empty = try await cluster.run(["inventory", "check", server.url(user: Self.role, database: "empty"), "--password-file", passwordFile])
            #expect(empty.status == 78)
            #expect(empty.output.contains("has no table 'vps_instances'"), "\(empty.output)")

            // Without a grant on a column the lookups read, the role is named with what to grant.
            try await server.psql("REVOKE SELECT (deleted_at) ON vps_instances FROM \(Self.role)", database: "platform")
            let revoked = try await cluster.run(["inventory", "check", url, "--password-file", passwordFile])
            #expect(revoked.status == 78)
            #expect(revoked.output.contains("may not read vps_instances.deleted_at"), "\(revoked.output)")
            try await server.psql("GRANT SELECT (deleted_at) ON vps_instances TO \(Self.role)", database: "platform")

            let withPassword = try await cluster.run(["inventory", "check", "postgres://\(Self.role):\(Self.password)@127.0.0.1:\(server.port)/platform"])
            #expect(withPassword.status == 78)
            #expect(withPassword.output.contains("carries a password"))
            #expect(!withPassword.output.contains(Self.password))

            // check-config connects the way the worker will: a wrong password is a problem.
            let secretFile = cluster.directory + "/api-secret"
            try "s3cret".write(toFile: secretFile, atomically: true, encoding: .utf8)
            let wrongPasswordFile = cluster.directory + "/wrong-password"
            try "nope".write(toFile: wrongPasswordFile, atomically: true, encoding: .utf8)
            func yaml(_ password: String) throws -> String {
                let path = cluster.directory + "/supervisor-\(UInt32.random(in: 0...UInt32.max)).yaml"
                try """
                    gateway:
                      api_secret_file: \(secretFile)
                    environments:
                      - name: production
                        inventory: \(url)
                        inventory_password_file: \(password)
                    """.write(toFile: path, atomically: true, encoding: .utf8)
                return path
            }
            let good = try await cluster.run(["check-config", try yaml(passwordFile)])
            #expect(good.status == 0, "\(good.output)")
            let wrong = try await cluster.run(["check-config", try yaml(wrongPasswordFile)])
            #expect(wrong.status == 78, "\(wrong.output)")
            #expect(wrong.output.contains("password authentication failed"), "\(wrong.output)")

            await server.stop()
            let down = try await cluster.run(["inventory", "check", url, "--password-file", passwordFile])
            #expect(down.status == 69, "\(down.output)")
            // A database that is down now does not fail the start: a warning only.
            let downConfig = try await cluster.run(["check-config", try yaml(passwordFile)])
            #expect(downConfig.status == 0, "\(downConfig.output)")
            #expect(downConfig.output.contains("warning: environments production"), "\(downConfig.output)")
        }
    }
}
