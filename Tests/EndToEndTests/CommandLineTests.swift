import Foundation
import GatewayProtocol
import GRDB
import LeaseInventory
import Settings
import SwiftProtobuf
import Synchronization
import Testing

/// The built binary as an operator runs it: exit codes, messages, JSON.
@Suite("Command line", .serialized, .timeLimit(.minutes(5)))
struct CommandLineTests {
    @Test("check-config names every problem and exits 78; --json lists them; a usable file names its children")
    func checkConfig() async throws {
        try await Cluster.with { cluster in
            let bad = cluster.directory + "/bad.yaml"
            try "gateway:\n  listen: nowhere\n  colour: blue\nenvironments:\n  - name: Prod\n    inventory: mysql://x\n"
                .write(toFile: bad, atomically: true, encoding: .utf8)
            let text = try await cluster.run(["check-config", bad])
            #expect(text.status == 78)
            for fragment in ["4 problem(s)", "gateway.colour: unknown key", "gateway.listen 'nowhere'", "environments[0].name 'Prod'", "is neither sqlite:PATH nor postgres://"] {
                #expect(text.output.contains(fragment), "\(fragment) missing in \(text.output)")
            }
            let json = try await cluster.run(["check-config", "--json", bad])
            #expect(json.status == 78)
            let report = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
            #expect(report["usable"] as? Bool == false)
            #expect((report["problems"] as? [String])?.count == 4)

            let good = cluster.directory + "/good.yaml"
            try "gateway:\n  listen: 127.0.0.1:1537\nenvironments:\n  - name: production\n    inventory: sqlite:\(try cluster.inventory("production"))\n"
                .write(toFile: good, atomically: true, encoding: .utf8)
            let usable = try await cluster.run(["check-config", good], environment: ["GATEWAY_API_SECRET": "s"])
            #expect(usable.status == 0)
            #expect(usable.output.contains("usable; children: gateway, worker-production"))
            // Each child's command line, as the supervisor will start it.
            let usableJSON = try await cluster.run(["check-config", "--json", good], environment: ["GATEWAY_API_SECRET": "s"])
            let lines = try #require((try JSONSerialization.jsonObject(with: Data(usableJSON.output.utf8)) as? [String: Any])?["command_lines"] as? [String: [String]])
            let gateway = try #require(lines["gateway"])
            #expect(gateway.first == "gateway" && gateway.contains("--listen") && gateway[gateway.firstIndex(of: "--listen")! + 1] == "127.0.0.1:1537", "\(gateway)")
            #expect(lines["worker-production"]?.contains("--gateway-url") == true && usable.output.contains("worker-production: vps-gateway worker --env production"))
            let noSecret = try await cluster.run(["check-config", good])
            #expect(noSecret.status == 78)
            #expect(noSecret.output.contains("no API secret"))
        }
    }

    @Test("bench --rate starts at most that many calls a second and names the cap in its JSON; a rate of 0 is a usage error")
    func benchRate() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production"))
            try await cluster.waitForClients(["production-1"])
            let admin = ["--admin-socket", cluster.adminSocket]
            let bench = ["bench", "--concurrency", "8", "--duration", "1s", "--warmup", "0s", "--json"] + admin
            // Start times 20 ms apart within the second: 50 at most, however fast the gateway.
            let paced = try await cluster.run(bench + ["--rate", "50"])
            #expect(paced.status == 0, "\(paced.output)")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(paced.output.utf8)) as? [String: Any], "\(paced.output)")
            let requests = try #require(report["requests"] as? Int)
            #expect((1...50).contains(requests), "\(paced.output)")
            #expect(report["errors"] as? Int == 0)
            #expect(report["rate_limit_rps"] as? Int == 50)

            let unpaced = try await cluster.run(bench)
            #expect(unpaced.status == 0, "\(unpaced.output)")
            let free = try #require(try JSONSerialization.jsonObject(with: Data(unpaced.output.utf8)) as? [String: Any], "\(unpaced.output)")
            #expect(free["rate_limit_rps"] == nil)
            #expect((free["requests"] as? Int ?? 0) > 0)

            let zero = try await cluster.run(bench + ["--rate", "0"])
            #expect(zero.status == 64)
            #expect(zero.output.contains("--rate must be 1-1000000"), "\(zero.output)")
        }
    }

    @Test("the gateway serves the network on one event loop thread unless --event-loops asks for more, says how many in its listening line, and answers either way", arguments: [nil, 3])
    func eventLoops(count: Int?) async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(count.map { ["--event-loops", "\($0)"] } ?? [])
            let inventory = try cluster.inventory("production", [SampleInventory.Entry("vps-loops", mac: "52:54:00:ee:00:01", ip: "10.8.0.1")])
            try cluster.startWorker(environment: "production", inventory: inventory)
            try await cluster.waitForClients(["production-1"])
            let found = try await cluster.run(["lookup", "--mac", "52:54:00:ee:00:01", "--admin-socket", cluster.adminSocket])
            #expect(found.status == 0, "\(found.output)")
            // NIO names its singleton group's threads NIO-SGLTN-<group>-#<n>; a thread one of
            // them starts (a Dispatch worker) takes the same name, so names are counted once.
            let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(gateway.pid)/task").map { "/proc/\(gateway.pid)/task/\($0)" }
            let threads = tasks.compactMap { task in
                (try? String(contentsOfFile: "\(task)/comm", encoding: .utf8)).map { (task: task, name: $0.trimmingCharacters(in: .newlines)) }
            }
            let names = threads.map(\.name)
            let loops = Set(names.filter { $0.hasPrefix("NIO-SGLTN") })
            #expect(loops.count == count ?? 1, "thread names: \(names.sorted())")
            #expect(names.contains("vpsgw-journal") && names.contains("vpsgw-timers"), "thread names: \(names.sorted())")
            // The journal's writer runs under SCHED_BATCH (3): field 41 of its stat, the policy.
            let writer = threads.first { $0.name == "vpsgw-journal" }
            let fields = writer.flatMap { statFields("\($0.task)/stat") } ?? []
            #expect(fields.count > 41 - 3 && fields[41 - 3] == "3", "the journal writer's stat fields from the state on: \(fields)")
            let listening = gateway.log.split(separator: "\n").first { $0.contains("gateway listening") }.map(String.init)
            #expect(listening?.contains("event_loops=\(count ?? 1)") == true, "\(gateway.log)")
        }
    }

    @Test("lookup exits 0 found, 1 not found, 2 no receivers; --json uses the admin API's field names")
    func lookupExitCodes() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let admin = ["--admin-socket", cluster.adminSocket]
            // Long enough that the journal's commit on a busy machine does not use it up
            // before the first attempt (that would end deadline_exceeded, never asked).
            let noReceivers = try await cluster.run(["lookup", "--mac", "52:54:00:01:00:01", "--timeout", "2s"] + admin)
            #expect(noReceivers.status == 2)
            #expect(noReceivers.output.contains("no_receivers"), "\(noReceivers.output)")

            let inventory = cluster.directory + "/production.sqlite3"
            #expect(try await cluster.run(["inventory", "create", inventory, "--environment", "production", "--sample-rows", "5"]).status == 0)
            try cluster.startWorker(environment: "production", inventory: inventory)
            try await cluster.waitForClients(["production-1"])

            let found = try await cluster.run(["lookup", "--mac", "52:54:00:01:00:03", "--json"] + admin)
            #expect(found.status == 0)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(found.output.utf8)) as? [String: Any])
            #expect(object["vps_id"] as? String == "vps-production-0003")
            #expect(object["outcome"] as? String == "ok")
            #expect(object["responder_environment"] as? String == "production")
            #expect(object["organization_id"] as? String == "org-production-4")
            for key in ["request_id", "responder_instance", "error", "attempts", "duration_us"] { #expect(object[key] != nil, "missing \(key)") }

            let notFound = try await cluster.run(["lookup", "--mac", "52:54:00:09:09:09"] + admin)
            #expect(notFound.status == 1)
            #expect(notFound.output.contains("not_found"))

            let clients = try await cluster.run(["clients", "--json"] + admin)
            #expect(clients.status == 0)
            #expect(clients.output.contains("\"instance_id\":\"production-1\""))
            #expect(clients.output.contains("\"environment\":\"production\""))
        }
    }

    @Test("`gateway --help` and `worker --help` show every setting with the variable and default it is defined with, and a bad variable is a configuration error (78) naming it")
    func helpShowsTheSettings() async throws {
        try await Cluster.with { cluster in
            for (command, settings) in [("gateway", GatewaySettings.all), ("worker", WorkerSettings.all)] {
                let help = try await cluster.run([command, "--help"])
                #expect(help.status == 0)
                // ArgumentParser wraps lines; compare with runs of white space as one space.
                let text = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                for setting in settings {
                    let shown = setting.help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
                    #expect(text.contains(setting.option) && text.contains(shown), "\(command) --help lacks \(setting.option): \(shown)")
                }
            }
            let badVariable = try await cluster.run(
                ["gateway", "--journal", "off", "--admin-socket", cluster.directory + "/bad.sock",
                 "--dhcp-leases", cluster.directory + "/dnsmasq.leases", "--dhcp-hosts", cluster.directory + "/vps-hosts"],
                environment: ["GATEWAY_API_SECRET": "x", "GATEWAY_RECONCILE_INTERVAL": "often"]
            )
            #expect(badVariable.status == 78)
            #expect(badVariable.output.contains("GATEWAY_RECONCILE_INTERVAL 'often' is not a duration"), "\(badVariable.output)")
        }
    }

    @Test("bad input is a usage error (64) that names the flag and what was expected")
    func usageErrors() async throws {
        try await Cluster.with { cluster in
            let badMAC = try await cluster.run(["lookup", "--mac", "52:54:00:zz:00:01"])
            #expect(badMAC.status == 64)
            #expect(badMAC.output.contains("--mac") && badMAC.output.contains("expected"))
            let badTimeout = try await cluster.run(["lookup", "--mac", "52:54:00:01:00:01", "--timeout", "soon"])
            #expect(badTimeout.status == 64)
            let badHex = try await cluster.run(["call", "Ping", "--payload-hex", "xyz"])
            #expect(badHex.status == 64)
            let badListen = try await cluster.run(["gateway", "--listen", "nowhere"], environment: ["GATEWAY_API_SECRET": "x"])
            #expect(badListen.status == 64)
            #expect(badListen.output.contains("HOST:PORT"))
        }
    }

    @Test("a client command with no gateway behind the socket exits 69 and says what to check")
    func adminSocketMissing() async throws {
        try await Cluster.with { cluster in
            let result = try await cluster.run(["clients", "--admin-socket", cluster.directory + "/none.sock"])
            #expect(result.status == 69)
            #expect(result.output.contains("is the gateway running"))
        }
    }

    @Test("the gateway refuses to start without a secret, with exit 78 and the variable's name")
    func gatewayNeedsSecret() async throws {
        try await Cluster.with { cluster in
            let process = try await cluster.startGateway(environment: [:], waitUntilReady: false)
            #expect(await process.waitForExit() == 78)
            #expect(process.log.contains("GATEWAY_API_SECRET"))
            let emptyFile = cluster.directory + "/empty-secret"
            _ = FileManager.default.createFile(atPath: emptyFile, contents: Data())
            let withEmptyFile = try await cluster.startGateway(["--api-secret-file", emptyFile], environment: [:], waitUntilReady: false)
            #expect(await withEmptyFile.waitForExit() == 78)
            #expect(withEmptyFile.log.contains("is empty"))
        }
    }

    @Test("a second gateway on a live admin socket refuses to start (73, naming the first one's pid) and leaves the first's socket alone")
    func adminSocketInUse() async throws {
        try await Cluster.with { cluster in
            let first = try await cluster.startGateway()
            let second = try cluster.spawn(
                name: "second-gateway",
                arguments: ["gateway", "--listen", "127.0.0.1:\(try cluster.reservePort())", "--admin-socket", cluster.adminSocket,
                            "--journal", cluster.directory + "/second.sqlite3", "--dhcp-leases", "off"],
                environment: ["GATEWAY_API_SECRET": cluster.secret]
            )
            #expect(await second.waitForExit() == 73)
            #expect(second.log.contains("another gateway (pid \(first.pid)) serves the admin socket"), "\(second.log)")
            #expect(!FileManager.default.fileExists(atPath: cluster.directory + "/second.sqlite3"), "refused before it opened anything")
            #expect(try await cluster.clients().isEmpty)  // the first still answers
        }
    }

    @Test("under a permissive umask the journal and its WAL are 0600 and the admin socket is 0660 from the moment it appears")
    func privateFiles() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(waitUntilReady: false, launcher: ["/bin/sh", "-c", "umask 000; exec \"$0\" \"$@\""])
            let first = Mutex<mode_t?>(nil)
            _ = await poll(timeout: .seconds(20)) {
                var info = stat()
                guard lstat(cluster.adminSocket, &info) == 0 else { return false }
                first.withLock { $0 = info.st_mode & 0o777 }
                return true
            }
            let mode = first.withLock { $0 }
            #expect(mode == 0o660, "the socket first appeared with mode \(String(mode ?? 0, radix: 8))")
            _ = try await cluster.clients()
            _ = try await cluster.call(.with { $0.method = "Ping"; $0.timeoutMs = 100 })
            for file in [cluster.journal, cluster.journal + "-wal", cluster.journal + "-shm"] {
                var info = stat()
                #expect(stat(file, &info) == 0, "\(file) exists")
                #expect(info.st_mode & 0o777 == 0o600, "\(file) has mode \(String(info.st_mode & 0o777, radix: 8))")
            }
            #expect(gateway.isRunning)
        }
    }

    @Test("a user who may not use the admin socket gets 77 and a permission message, not 'is the gateway running?'")
    func permissionDenied() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            // The cluster's directory is 0700 and root's: another user cannot reach the socket.
            // The binary may sit under a directory that user cannot reach either (a clone in a
            // private temp directory), so it runs a copy in a directory anyone may enter.
            var template = Array("/tmp/vpsgw-bin-XXXXXX".utf8CString)
            let made = mkdtemp(&template) != nil
            try #require(made)
            let binDirectory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            cluster.onTearDown { try? FileManager.default.removeItem(atPath: binDirectory) }
            chmod(binDirectory, 0o755)
            let binary = binDirectory + "/vps-gateway"
            if link(TestBinary.path, binary) != 0 { try FileManager.default.copyItem(atPath: TestBinary.path, toPath: binary) }
            let denied = try cluster.spawn(
                name: "cli-nobody", executable: "/usr/sbin/runuser",
                arguments: ["-u", "nobody", "--", binary, "clients", "--admin-socket", cluster.adminSocket], environment: [:]
            )
            #expect(await denied.waitForExit(timeout: .seconds(20)) == 77, "\(denied.log)")
            #expect(denied.log.contains("permission denied on the admin socket"), "\(denied.log)")
        }
    }

    @Test("a second gateway on the same journal refuses to start (73, naming the first one's pid)")
    func journalInUse() async throws {
        try await Cluster.with { cluster in
            let first = try await cluster.startGateway()
            let second = try cluster.spawn(
                name: "second-gateway",
                arguments: ["gateway", "--listen", "127.0.0.1:\(try cluster.reservePort())", "--admin-socket", cluster.directory + "/second.sock",
                            "--journal", cluster.journal, "--dhcp-leases", "off"],
                environment: ["GATEWAY_API_SECRET": cluster.secret]
            )
            #expect(await second.waitForExit() == 73)
            #expect(second.log.contains("is in use by another gateway (pid \(first.pid))"), "\(second.log)")
            #expect(try await cluster.clients().isEmpty)
        }
    }

    @Test("worker configuration errors exit 78 and name the problem", arguments: [
        (["VPS_NODE_GATEWAY_ENDPOINTS": "http://h1:1537"], "no node name"),
        (["VPS_NODE_GATEWAY_ENDPOINTS": "node1:h1:1537"], "no node name or no scheme"),
        (["VPS_GATEWAY_URL": "ftp://h1:1537"], "scheme 'ftp'"),
        ([:], "VPS_GATEWAY_API_SECRET"),
    ])
    func workerConfigurationErrors(environment: [String: String], message: String) async throws {
        try await Cluster.with { cluster in
            var env = environment
            if message != "VPS_GATEWAY_API_SECRET" { env["VPS_GATEWAY_API_SECRET"] = "x" }
            let result = try await cluster.run(["worker", "--env", "production", "--inventory", "sqlite:\(try cluster.inventory("production"))"], environment: env)
            #expect(result.status == 78)
            #expect(result.output.contains(message), "output: \(result.output)")
        }
    }

    @Test("a missing or unusable inventory stops the worker at start with exit 78", arguments: [
        ("missing", "does not exist"),
        ("garbage", "cannot be read as a SQLite database"),
        ("no-tables", "has no table 'vps_instances'"),
        ("missing-column", "lacks column(s) deleted_at"),
        ("postgres-no-user", "names no user"),
        ("postgres-password", "carries a password"),
        ("unknown-scheme", "is neither sqlite:PATH nor postgres://"),
    ])
    func unusableInventory(kind: String, expected: String) async throws {
        try await Cluster.with { cluster in
            let path = cluster.directory + "/\(kind).sqlite3"
            var url = "sqlite:\(path)"
            switch kind {
            case "garbage":
                _ = FileManager.default.createFile(atPath: path, contents: Data(repeating: 0x42, count: 4096))
            case "no-tables":
                _ = FileManager.default.createFile(atPath: path, contents: nil)  // a valid, empty database
            case "missing-column":
                let database = try DatabaseQueue(path: path)
                try await database.write { db in
                    try db.execute(sql: "CREATE TABLE vps_instances (id TEXT PRIMARY KEY, organization_id TEXT, mac_address TEXT)")
                    try db.execute(sql: "CREATE TABLE dhcp_leases (id TEXT, vps_id TEXT, organization_id TEXT, mac_address TEXT, ip_address TEXT)")
                }
                try database.close()
            case "postgres-no-user":
                url = "postgres://db/inventory"
            case "postgres-password":
                url = "postgresql://vps:s3cret@db/inventory"
            case "unknown-scheme":
                url = "mysql://vps@db/inventory"
            default:
                break
            }
            let result = try await cluster.run(["worker", "--env", "production", "--inventory", url], environment: ["VPS_GATEWAY_API_SECRET": "x"])
            #expect(result.status == 78)
            #expect(result.output.contains(expected), "output: \(result.output)")
            #expect(!result.output.contains("s3cret"), "a password in a refused URL is not echoed")
        }
    }
}
