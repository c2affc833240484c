import AsyncPrimitives
import Foundation
import GRDB
import GatewayAdminClient
import GatewayJournal
import GatewayProtocol
import LeaseInventory
import Logging
import SwiftProtobuf
import Synchronization
import Testing

/// The request journal with real processes: crashes, outages, replays, bad files.
@Suite("Request journal", .serialized, .timeLimit(.minutes(4)))
struct JournalTests {
    let vps = SampleInventory.Entry("vps-j", mac: "52:54:00:dd:00:01", ip: "10.4.0.1")

    func lookupRequest(id: String, timeoutMs: UInt32 = 30_000, async: Bool = false) -> AdminCallRequest {
        .with {
            $0.method = RequestMethods.findVPSByLease.name
            $0.payload = try! FindVPSByLeaseRequest.with { $0.mac = vps.mac }.serializedBytes()
            $0.timeoutMs = timeoutMs
            $0.requestID = id
            $0.async = async
        }
    }

    func openJournal(_ cluster: Cluster) throws -> RequestJournal {
        try RequestJournal.openExisting(at: cluster.journal, writable: false, logger: Logger(label: "test"))
    }

    /// Handler runs per request id, from the worker's debug log.
    func handlerRuns(_ worker: TestProcess) -> [String: Int] {
        var runs: [String: Int] = [:]
        for line in worker.log.split(separator: "\n") where line.contains("handler started") {
            guard let range = line.range(of: "request_id=") else { continue }
            let id = line[range.upperBound...].prefix { $0 != " " }
            runs[String(id), default: 0] += 1
        }
        return runs
    }

    @Test("SIGKILL of the gateway at random points: every accepted request ends terminal, once, with at most one handler run per id")
    func gatewayCrashes() async throws {
        try await Cluster.with { cluster in
            let worker = try cluster.startWorker(
                environment: "production", inventory: try cluster.inventory("production", [vps]),
                ["--simulate-latency", "40ms", "--log-level", "debug", "--max-concurrent", "1024"]
            )
            let accepted = RequestIDs()
            for round in 0..<6 {
                let gateway = try await cluster.startGateway()
                try await cluster.waitForClients(["production-1"])
                let acceptedBefore = accepted.ids.count
                let unanswered = RequestIDs()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for index in 0..<30 {
                        let id = "crash-\(round)-\(index)"
                        unanswered.insert(id)
                        group.addTask {
                            defer { unanswered.remove(id) }
                            // Async calls return once recorded; sync ones once answered. Either
                            // reply means the journal took the request.
                            // A deadline longer than the suite may run (4 minutes): rows left
                            // unfinished by a kill wait for a later gateway, and on a busy machine
                            // (a clean CI build still writing back, every fsync slow) six rounds
                            // took 52 s; rows of the first rounds then passed a 30 s deadline and
                            // were expired at a start, which is right but not what this checks.
                            // The test bounds its own wait below, after the kill.
                            if (try? await cluster.call(lookupRequest(id: id, timeoutMs: 240_000, async: index % 3 != 0))) != nil {
                                accepted.insert(id)
                            }
                        }
                    }
                    // Kill once the journal has taken some of this round's calls (however slow
                    // the machine is), somewhere between then and "all answered".
                    let recording = await poll(timeout: .seconds(30)) { accepted.ids.count > acceptedBefore }
                    #expect(recording, "round \(round): no call was accepted within 30 s")
                    _ = await waitUntil(.now + .milliseconds(Int.random(in: 0...120)))
                    gateway.signal(SIGKILL)
                    // A dead gateway's connections are closed by the kernel, so every call ends
                    // at once. One CI run hit the suite's limit somewhere in this test: these
                    // bounds turn a repeat into a failure that names what waited.
                    // The failure ends the test, and the cluster prints every process's log.
                    let exited = await gateway.waitForExit(timeout: .seconds(60))
                    try #require(exited != nil, "round \(round): the gateway is still there 60 s after SIGKILL: \(threadStates(of: gateway.pid))")
                    let ended = await poll(timeout: .seconds(30)) { unanswered.ids.isEmpty }
                    try #require(ended, "round \(round): calls still waiting 30 s after the gateway's SIGKILL and exit: \(unanswered.ids.sorted())")
                    try await group.waitForAll()
                }
            }
            try await cluster.startGateway()
            let journal = try openJournal(cluster)
            let settled = await poll(timeout: .seconds(60)) {
                ((try? journal.unfinished().isEmpty) ?? false)
            }
            #expect(settled, "unfinished rows remain: \((try? journal.unfinished().map(\.requestID)) ?? [])")
            let rows = try journal.list(.init(limit: 10_000))
            #expect(Set(rows.map(\.requestID)).count == rows.count, "a request id appears twice")
            let byID = Dictionary(uniqueKeysWithValues: rows.map { ($0.requestID, $0) })
            let acceptedIDs = accepted.ids
            #expect(acceptedIDs.count > 0)
            for id in acceptedIDs {
                let row = try #require(byID[id], "accepted request \(id) is missing from the journal")
                #expect(row.state == .completed && row.outcome == .ok, "\(id): \(row.state) \(row.outcome?.rawValue ?? "-") \(row.error ?? "")")
            }
            for row in rows { #expect(row.state.isTerminal) }
            let retried = rows.filter { $0.attempts > 1 }.count
            print("crash test: \(rows.count) rows, \(acceptedIDs.count) accepted, \(retried) needed more than one attempt")
            let runs = handlerRuns(worker)
            for (id, count) in runs { #expect(count <= 1, "the handler ran \(count) times for \(id)") }
            #expect(runs.count >= acceptedIDs.count)
        }
    }

    @Test("a worker killed mid-request: the request completes after the worker restarts")
    func workerRestart() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let inventory = try cluster.inventory("production", [vps])
            let slow = try cluster.startWorker(environment: "production", inventory: inventory, ["--simulate-latency", "10s"])
            try await cluster.waitForClients(["production-1"])
            async let call = cluster.call(lookupRequest(id: "survivor", timeoutMs: 20_000))
            try await cluster.waitForRequestInFlight(at: "production-1")
            slow.signal(SIGKILL)
            await slow.waitForExit()
            try await cluster.waitForClients([])
            try cluster.startWorker(environment: "production", inventory: inventory)
            let response = try await call
            #expect(response.outcome == .ok)
            #expect(response.state == "completed")
            #expect(response.attempts >= 2)
        }
    }

    @Test("an outage longer than the retry backoff: requests wait pending, complete when a worker returns; expired ones replay")
    func outageAndReplay() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            // No worker at all: one request with room to wait, one that will expire.
            let waiting = try await cluster.call(lookupRequest(id: "patient", timeoutMs: 30_000, async: true))
            #expect(waiting.state == "pending")
            let doomed = try await cluster.call(lookupRequest(id: "doomed", timeoutMs: 500, async: true))
            #expect(doomed.state == "pending")
            let journal = try openJournal(cluster)
            #expect(await poll(timeout: .seconds(20)) { (try? journal.record("doomed"))??.state == .expired })
            try await Task.sleep(for: .seconds(6))  // beyond the 5 s retry backoff cap
            #expect(try journal.record("patient")?.state.isTerminal == false)

            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            #expect(await poll(timeout: .seconds(15)) { (try? journal.record("patient"))??.state == .completed })

            let replay = try await cluster.run(["journal", "replay", "--state", "expired", "--journal", cluster.journal, "--admin-socket", cluster.adminSocket, "--json"])
            #expect(replay.status == 0)
            #expect(replay.output.contains("\"doomed\""))
            #expect(await poll(timeout: .seconds(10)) { (try? journal.record("doomed"))??.state == .completed })
            let replayed = try #require(try journal.record("doomed"))
            #expect(replayed.origin == "replay")
            #expect(replayed.outcome == .ok)
        }
    }

    @Test("a repeated request id gets the first outcome without running the handler again")
    func idempotentRepeat() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--log-level", "debug"])
            try await cluster.waitForClients(["production-1"])
            let first = try await cluster.call(lookupRequest(id: "same-id"))
            let second = try await cluster.call(lookupRequest(id: "same-id"))
            #expect(first.outcome == .ok && second.outcome == .ok)
            #expect(first.payload == second.payload)
            #expect(handlerRuns(worker)["same-id"] == 1)
        }
    }

    @Test("an async call returns at once as pending; journal show tells the outcome later")
    func asyncCall() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]), ["--simulate-latency", "300ms"])
            try await cluster.waitForClients(["production-1"])
            // "pending" is the proof it returned before the handler's answer: no clock needed
            // (a busy machine took 290 ms for a call a 250 ms bound expected).
            let response = try await cluster.call(lookupRequest(id: "later", async: true))
            #expect(response.state == "pending")
            #expect(!response.hasResult && response.payload.isEmpty)
            let shown = await poll(timeout: .seconds(20)) {
                let result = try? await cluster.run(["journal", "show", "later", "--journal", cluster.journal])
                return result?.output.contains("vps-j") == true
            }
            #expect(shown)
            let json = try await cluster.run(["journal", "show", "later", "--json", "--journal", cluster.journal])
            #expect(json.output.contains("\"state\":\"completed\""))
        }
    }

    @Test("journal list, stats, verify and prune work beside a running gateway")
    func maintenanceCommands() async throws {
        try await Cluster.with { cluster in
            try await cluster.startGateway()
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            for index in 0..<5 { _ = try await cluster.call(lookupRequest(id: "m-\(index)")) }
            let journalFlag = ["--journal", cluster.journal]
            let stats = try await cluster.run(["journal", "stats", "--json"] + journalFlag)
            #expect(stats.status == 0)
            #expect(stats.output.contains("\"completed\":5"))
            let list = try await cluster.run(["journal", "list", "--state", "completed", "--since", "1h"] + journalFlag)
            #expect(list.output.contains("m-4"))
            let verify = try await cluster.run(["journal", "verify"] + journalFlag)
            #expect(verify.status == 0)
            #expect(verify.output.contains("integrity  ok"))
            try await Task.sleep(for: .milliseconds(20))
            let prune = try await cluster.run(["journal", "prune", "--older-than", "1ms", "--json"] + journalFlag)
            #expect(prune.status == 0)
            #expect(prune.output.contains("\"deleted\":5"))
            let unknown = try await cluster.run(["journal", "show", "no-such-id"] + journalFlag)
            #expect(unknown.status == 1)
            #expect(unknown.output.contains("no request 'no-such-id'"))
        }
    }

    @Test("the gateway and a worker turn SQLite's memory statistics off before opening a database (their startup lines say so)")
    func sqliteProcessOptions() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway()
            let worker = try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            for (process, line) in [(gateway, "journal opened"), (worker, "worker starting")] {
                let found = process.log.split(separator: "\n").first { $0.contains(line) }.map(String.init)
                #expect(found?.contains("sqlite_memory_statistics=off") == true, "\(process.log)")
            }
        }
    }

    @Test("finished rows older than the retention are pruned in the background and the WAL stays small")
    func retention() async throws {
        try await Cluster.with { cluster in
            let gateway = try await cluster.startGateway(["--journal-retention", "1s", "--journal-upkeep-interval", "300ms"])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            for index in 0..<50 {
                let response = try await cluster.call(lookupRequest(id: "old-\(index)"))
                #expect(response.outcome == .ok && response.state == "completed")
            }
            // However long the calls took, every one of the 50 finished rows is pruned by the
            // gateway itself, and the WAL ends truncated.
            let journal = try openJournal(cluster)
            let pruned = await poll(timeout: .seconds(20)) {
                let stats = try? journal.stats()
                return stats.map { $0.countsByState.values.reduce(0, +) == 0 && $0.walBytes == 0 } ?? false
            }
            #expect(pruned, "stats: \(String(describing: try? journal.stats()))")
            let deleted = gateway.log.split(separator: "\n").filter { $0.contains("journal pruned") }.compactMap { line in
                line.range(of: "deleted=").flatMap { Int(line[$0.upperBound...].prefix { $0.isNumber }) }
            }
            #expect(deleted.reduce(0, +) == 50, "prune log lines: \(deleted)")
        }
    }

    @Test("a journal write failing at run time (file size limit, as on a full disk) fails the call clearly and records nothing")
    func writeFailure() async throws {
        try await Cluster.with { cluster in
            // Ignore SIGXFSZ so writes past the limit fail with EFBIG instead of killing the process.
            let gateway = try await cluster.startGateway(launcher: ["/bin/sh", "-c", "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\""])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            var refusal: AdminClientError?
            var failedID = ""
            // A bounded number of calls: each grows the WAL until a write hits the limit.
            for index in 0..<3000 where refusal == nil {
                do {
                    _ = try await cluster.call(lookupRequest(id: "fill-\(index)-" + String(repeating: "x", count: 100)))
                } catch let error as AdminClientError {
                    refusal = error
                    failedID = "fill-\(index)-" + String(repeating: "x", count: 100)
                }
            }
            let error = try #require(refusal, "no write ever failed")
            #expect(failedID != "fill-0-" + String(repeating: "x", count: 100), "the first call already failed: not a run-time failure")
            #expect(error.message.contains("not recorded"), "\(error)")
            #expect(error.code == .notRecorded)
            #expect(gateway.isRunning)
            // The CLI says so with 74 (a write failed), not "is the gateway running?" (69).
            let lookup = try await cluster.run(["lookup", "--mac", vps.mac, "--admin-socket", cluster.adminSocket])
            #expect(lookup.status == 74, "\(lookup.output)")
            #expect(lookup.output.contains("could not record"), "\(lookup.output)")
            let journal = try openJournal(cluster)
            #expect(try journal.record(failedID) == nil, "a refused request must not be in the journal")
        }
    }

    @Test("a journal file deleted under the running gateway is noticed within one upkeep interval: logged, STATUS says UNHEALTHY, health NOT_SERVING")
    func deletedJournalNoticed() async throws {
        try await Cluster.with { cluster in
            let notify = try NotifySocket(path: cluster.directory + "/notify.sock")
            let gateway = try await cluster.startGateway(["--journal-upkeep-interval", "300ms"], environment: [
                "GATEWAY_API_SECRET": cluster.secret, "NOTIFY_SOCKET": notify.path,
            ])
            #expect(await notify.waitFor("READY=1"))
            for suffix in ["", "-wal", "-shm"] { unlink(cluster.journal + suffix) }
            #expect(await poll(timeout: .seconds(10)) { gateway.log.contains("journal file lost") }, "\(gateway.log.suffix(1500))")
            #expect(gateway.log.contains("was deleted"))
            #expect(await notify.waitFor("UNHEALTHY: journal writes failing"))
        }
    }

    @Test("final rows that fail to commit on a full disk are kept and written once there is room again: no answered call stays unfinished")
    func finalRowsRetried() async throws {
        try await Cluster.with { cluster in
            // A soft limit only, which the test can lift on the running gateway later.
            let gateway = try await cluster.startGateway(launcher: ["/bin/sh", "-c", "trap '' XFSZ; ulimit -S -f 256; exec \"$0\" \"$@\""])
            try cluster.startWorker(environment: "production", inventory: try cluster.inventory("production", [vps]))
            try await cluster.waitForClients(["production-1"])
            var answered: [String] = []
            var refused = false
            for index in 0..<3000 where !refused {
                let id = "full-\(index)-" + String(repeating: "y", count: 100)
                do {
                    if try await cluster.call(lookupRequest(id: id)).outcome == .ok { answered.append(id) }
                } catch {
                    refused = true
                }
            }
            #expect(refused, "the size limit was never hit")
            // Room again: lift the limit on the running gateway.
            let lift = try cluster.spawn(name: "prlimit", executable: "/usr/bin/prlimit", arguments: ["--pid", "\(gateway.pid)", "--fsize=unlimited:"], environment: [:])
            #expect(await lift.waitForExit() == 0, "\(lift.log)")
            let journal = try openJournal(cluster)
            let ids = answered
            let settled = await poll(timeout: .seconds(30)) {
                ids.allSatisfy { id in (try? journal.record(id))??.state == .completed }
            }
            let stuck = ids.filter { (try? journal.record($0))??.state != .completed }
            #expect(settled, "answered calls still unfinished in the journal: \(stuck.count) of \(answered.count)")
        }
    }

    @Test("a journal with damaged pages is refused at start as corrupt (78), and journal verify exits 65 for it", arguments: [
        ("index", 0.35), ("data", 0.75),
    ])
    func damagedPages(kind: String, at fraction: Double) async throws {
        try await Cluster.with { cluster in
            // A journal with some thousand rows (data pages) and its index, written and closed.
            let generated = try await cluster.run(["journal", "generate", "--journal", cluster.journal, "--count", "4000", "--method", "Ping"])
            #expect(generated.status == 0, "\(generated.output)")
            let database = try DatabaseQueue(path: cluster.journal)
            try await database.write { db in try db.execute(sql: "CREATE INDEX IF NOT EXISTS test_damage ON requests(created_at, request_id)") }
            try database.close()
            // Overwrite one page past the schema page with garbage.
            let handle = try #require(FileHandle(forUpdatingAtPath: cluster.journal))
            let size = try handle.seekToEnd()
            let pages = size / 4096
            let page = max(2, UInt64(Double(pages) * fraction))
            try handle.seek(toOffset: page * 4096 + 100)
            handle.write(Data((0..<3000).map { _ in UInt8.random(in: 0...255) }))
            try handle.close()

            let verify = try await cluster.run(["journal", "verify", "--journal", cluster.journal])
            #expect(verify.status == 65, "\(kind): \(verify.output)")
            let gateway = try await cluster.startGateway(waitUntilReady: false)
            #expect(await gateway.waitForExit() == 78, "\(kind): \(gateway.log)")
            #expect(gateway.log.contains("is corrupt"), "\(gateway.log)")
        }
    }

    @Test("the gateway refuses a journal it cannot trust, with exit 78 and what to do", arguments: [
        "garbage", "newer-schema", "edited-migration", "read-only-directory",
    ])
    func badJournals(kind: String) async throws {
        try await Cluster.with { cluster in
            var arguments: [String] = []
            var environment = ["GATEWAY_API_SECRET": cluster.secret]
            let expected: String
            switch kind {
            case "garbage":
                _ = FileManager.default.createFile(atPath: cluster.journal, contents: Data(repeating: 0x5a, count: 8192))
                expected = "is not a usable SQLite database"
            case "newer-schema":
                let database = try DatabaseQueue(path: cluster.journal)
                try await database.write { db in
                    try db.execute(sql: "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, checksum TEXT, applied_at TEXT)")
                    try db.execute(sql: "INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 'x', 'now')")
                }
                try database.close()
                expected = "schema version 99"
            case "edited-migration":
                // Apply the real migrations once, then run with a changed copy of them.
                let first = try await cluster.startGateway()
                first.signal(SIGTERM)
                await first.waitForExit()
                let copy = cluster.directory + "/migrations"
                try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: true)
                let source = URL(fileURLWithPath: TestBinary.path).deletingLastPathComponent()
                let original = try MigrationSet.locate(explicit: nil, executable: source.appendingPathComponent("vps-gateway").path)
                for migration in original.migrations {
                    try (migration.sql + "\n-- edited\n").write(toFile: copy + "/" + migration.name, atomically: true, encoding: .utf8)
                }
                environment["VPS_GATEWAY_MIGRATIONS"] = copy
                expected = "changed after it was applied"
            default:
                let directory = cluster.directory + "/locked"
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o500])
                arguments = ["--journal", directory + "/journal.sqlite3"]
                expected = "cannot open journal"
            }
            if kind == "read-only-directory" && getuid() == 0 {
                // root writes through directory permissions; use a path under a file instead.
                let file = cluster.directory + "/not-a-directory"
                _ = FileManager.default.createFile(atPath: file, contents: Data())
                arguments = ["--journal", file + "/journal.sqlite3"]
            }
            let gateway = try await cluster.startGateway(arguments, environment: environment, waitUntilReady: false)
            #expect(await gateway.waitForExit() == 78)
            #expect(gateway.log.contains(expected) || (kind == "read-only-directory" && gateway.log.contains("journal")), "log: \(gateway.log)")
        }
    }
}

/// Request ids that concurrent callers add and remove (the calls answered, the calls waiting).
final class RequestIDs: Sendable {
    private let storage = Mutex<Set<String>>([])
    func insert(_ id: String) { storage.withLock { _ = $0.insert(id) } }
    func remove(_ id: String) { storage.withLock { _ = $0.remove(id) } }
    var ids: Set<String> { storage.withLock { $0 } }
}
