import Foundation
import Synchronization
import GRDB
import GRDBSQLite
import GatewayProtocol
import GatewayWorker
@testable import LeaseInventory
import NIOCore
import NIOPosix
import SwiftProtobuf
import Testing
import TextFormats

@Suite("Inventory lookups")
struct InventoryTests {
    /// A temporary inventory with the platform's tables and `statements` run on it.
    func withInventory(_ statements: [String], _ body: (SQLiteInventory) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inventory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("inventory.sqlite3").path
        try SampleInventory.create(at: path, environment: "test", rows: 0)
        let database = try DatabaseQueue(path: path)
        try await database.write { db in for statement in statements { try db.execute(sql: statement) } }
        try database.close()
        try await body(try SQLiteInventory(path: path))
    }

    @Test("a lease found by MAC wins over a VPS instance with the same MAC")
    func leaseFirst() async throws {
        try await withInventory([
            "INSERT INTO vps_instances VALUES ('vps-a', 'org-a', '52:54:00:00:00:01', NULL)",
            "INSERT INTO vps_instances VALUES ('vps-b', 'org-b', '52:54:00:00:00:02', NULL)",
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l', 'vps-b', 'org-b', '52:54:00:00:00:01', '10.0.0.1')",
        ]) { inventory in
            let owner = try await inventory.owner(mac: MACAddress("52:54:00:00:00:01"), ip: nil)
            #expect(owner?.vpsID == "vps-b")
            #expect(owner?.matchedBy == .leaseByMAC)
        }
    }

    @Test("a lease of a deleted VPS is ignored, and so is a deleted VPS instance")
    func deletedIgnored() async throws {
        try await withInventory([
            "INSERT INTO vps_instances VALUES ('vps-gone', 'org', '52:54:00:00:00:01', '2026-01-01 00:00:00')",
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l', 'vps-gone', 'org', '52:54:00:00:00:01', '10.0.0.1')",
        ]) { inventory in
            let owner = try await inventory.owner(mac: MACAddress("52:54:00:00:00:01"), ip: "10.0.0.1")
            #expect(owner == nil)
        }
    }

    @Test("then a live VPS instance by MAC, then a lease by IP")
    func fallbacks() async throws {
        try await withInventory([
            "INSERT INTO vps_instances VALUES ('vps-i', 'org-i', '52:54:00:00:00:05', NULL)",
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l', 'vps-ip', 'org-ip', '52:54:00:00:00:09', '10.0.0.9')",
        ]) { inventory in
            let byInstance = try await inventory.owner(mac: MACAddress("52:54:00:00:00:05"), ip: "10.0.0.9")
            #expect(byInstance?.vpsID == "vps-i")
            #expect(byInstance?.matchedBy == .instanceByMAC)
            let byIP = try await inventory.owner(mac: MACAddress("52:54:00:00:00:77"), ip: "10.0.0.9")
            #expect(byIP?.vpsID == "vps-ip")
            #expect(byIP?.matchedBy == .leaseByIP)
        }
    }

    @Test("stored MACs match whatever their case and surrounding spaces")
    func macNormalisation() async throws {
        try await withInventory([
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l1', 'vps-upper', 'o', '52:54:00:AB:CD:EF', '10.0.0.1')",
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l2', 'vps-spaced', 'o', '  52:54:00:Ab:00:02 ', '10.0.0.2')",
        ]) { inventory in
            let upper = try await inventory.owner(mac: MACAddress("52-54-00-ab-cd-ef"), ip: nil)
            let spaced = try await inventory.owner(mac: MACAddress(" 52:54:00:AB:00:02"), ip: nil)
            #expect(upper?.vpsID == "vps-upper")
            #expect(spaced?.vpsID == "vps-spaced")
        }
    }

    @Test("a MAC stored both in the platform's form and in capitals resolves to the row in the platform's form, whichever form is asked")
    func platformFormFirst() async throws {
        try await withInventory([
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l1', 'vps-capitals', 'o', '52:54:00:AB:CD:EF', '10.0.0.1')",
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l2', 'vps-platform', 'o', '52:54:00:ab:cd:ef', '10.0.0.2')",
            "INSERT INTO vps_instances VALUES ('vps-i-capitals', 'o', '52:54:00:AB:00:01', NULL)",
            "INSERT INTO vps_instances VALUES ('vps-i-platform', 'o', '52:54:00:ab:00:01', NULL)",
        ]) { inventory in
            for asked in ["52:54:00:AB:CD:EF", "52-54-00-ab-cd-ef"] {
                let owner = try await inventory.owner(mac: MACAddress(asked), ip: nil)
                #expect(owner?.vpsID == "vps-platform", "asked as \(asked)")
            }
            let instance = try await inventory.owner(mac: MACAddress("52:54:00:AB:00:01"), ip: nil)
            #expect(instance?.vpsID == "vps-i-platform")
            #expect(instance?.matchedBy == .instanceByMAC)
        }
    }

    @Test("no lookup query builds a temporary b-tree per run (an IN list of bound values did, twice per request)")
    func lookupsBuildNoTemporaryTable() async throws {
        try await withInventory([]) { inventory in
            let queue = try DatabaseQueue(path: inventory.path)
            defer { try? queue.close() }
            for sql in SQLiteInventory.lookupQueries {
                let opcodes = try await queue.read { db -> [String] in
                    let statement = try db.makeStatement(sql: "EXPLAIN " + sql)
                    let parameters = Int(sqlite3_bind_parameter_count(statement.sqliteStatement))
                    statement.arguments = StatementArguments(Array(repeating: DatabaseValue.null, count: parameters))
                    return try Row.fetchAll(statement).map { $0["opcode"] }
                }
                #expect(opcodes.contains("ResultRow"), "not the program of a query: \(opcodes)")
                #expect(!opcodes.contains("OpenEphemeral"), "\(sql) builds a temporary b-tree on every run")
            }
        }
    }

    @Test("a writer holding the inventory's lock is waited out: a lookup during a short write answers after it, one past the busy timeout fails as a query error")
    func writerLock() async throws {
        try await withInventory([
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l', 'vps-1', 'org-1', '52:54:00:00:00:01', '10.0.0.1')",
        ]) { inventory in
            var configuration = Configuration()
            configuration.allowsUnsafeTransactions = true
            let writer = try DatabaseQueue(path: inventory.path, configuration: configuration)
            defer { try? writer.close() }
            // A pending write lock keeps new readers out, as the platform's commit does.
            try writer.inDatabase { db in try db.execute(sql: "BEGIN EXCLUSIVE") }
            // Released from a thread of its own, not a task: when the test process starts
            // with every suite at once, the cooperative pool can be starved for longer than
            // the busy timeout, and a release queued behind the lookup's last retry would fail
            // the lookup for the test's sake, not the product's.
            let released = ReleaseResult()
            let releaser = Thread {
                usleep(200_000)
                let result = Result { try writer.inDatabase { db in try db.execute(sql: "COMMIT") } }
                released.result.withLock { $0 = result }
            }
            let started = ContinuousClock.now
            releaser.start()
            let owner = try await inventory.owner(mac: MACAddress("52:54:00:00:00:01"), ip: nil)
            #expect(owner?.vpsID == "vps-1")
            #expect(ContinuousClock.now - started >= .milliseconds(150), "the lookup cannot have read through an exclusive lock")
            // The lookup answered, so the lock was gone: the releaser has committed or is
            // storing its result.
            while released.result.withLock({ $0 == nil }) { try await Task.sleep(for: .milliseconds(1)) }
            try released.result.withLock { $0 }?.get()

            try writer.inDatabase { db in try db.execute(sql: "BEGIN EXCLUSIVE") }
            defer { try? writer.inDatabase { db in try db.execute(sql: "COMMIT") } }
            await #expect(throws: InventoryError.self) {
                _ = try await inventory.owner(mac: MACAddress("52:54:00:00:00:01"), ip: nil)
            }
        }
    }

    @Test("lookups answered at once on an event loop share one read transaction per loop turn: a writer cannot commit while the turn runs and can once it has ended")
    func lookupsOfOneLoopTurnShareATransaction() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("inventory-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("inventory.sqlite3").path
        try SampleInventory.create(at: path, environment: "test", rows: 0)
        var immediate = Configuration()
        immediate.busyMode = .immediateError
        let writer = try DatabaseQueue(path: path, configuration: immediate)
        try await writer.write { db in try db.execute(sql: "INSERT INTO vps_instances VALUES ('vps-a', 'org', '52:54:00:00:00:01', NULL)") }
        let inventory = try SQLiteInventory(path: path)
        let insert = "INSERT INTO vps_instances VALUES ('vps-b', 'org', '52:54:00:00:00:02', NULL)"
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let turn = try await loop.submit {
            let first = try inventory.ownerAtOnce(mac: MACAddress("52:54:00:00:00:01"), ip: nil)
            // The turn's transaction holds SQLite's shared lock: the writer's commit is refused.
            let writerGotIn = (try? writer.write { db in try db.execute(sql: insert) }) != nil
            let second = try inventory.ownerAtOnce(mac: MACAddress("52:54:00:00:00:02"), ip: nil)
            return (first, writerGotIn, second)
        }.get()
        guard case .answered(let first) = turn.0, case .answered(let second) = turn.2 else {
            Issue.record("a lookup on an idle inventory would have waited")
            return
        }
        #expect(first?.vpsID == "vps-a")
        #expect(!turn.1, "a writer committed while the turn's read transaction was open")
        #expect(second == nil)
        // The turn has ended once the loop ran what was queued before this.
        try await loop.submit {}.get()
        try await writer.write { db in try db.execute(sql: insert) }
        let next = try await loop.submit { try inventory.ownerAtOnce(mac: MACAddress("52:54:00:00:00:02"), ip: nil) }.get()
        guard case .answered(let owner) = next else {
            Issue.record("a lookup after the write would have waited")
            return
        }
        #expect(owner?.vpsID == "vps-b", "the next turn sees the write")
        try writer.close()
    }

    @Test("500 lookups at once, more than there are connections, each get their own row")
    func concurrentLookups() async throws {
        let rows = (0..<50).map { index in
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l\(index)', 'vps-\(index)', 'org', '52:54:00:00:01:\(String(format: "%02x", index))', '10.0.1.\(index)')"
        }
        try await withInventory(rows) { inventory in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for call in 0..<500 {
                    group.addTask {
                        let index = call % 50
                        let owner = try await inventory.owner(mac: MACAddress("52:54:00:00:01:\(String(format: "%02x", index))"), ip: nil)
                        return owner?.vpsID == "vps-\(index)"
                    }
                }
                var right = 0
                for try await ok in group where ok { right += 1 }
                #expect(right == 500)
            }
        }
    }

    @Test("MAC parsing accepts the usual forms and rejects the rest", arguments: [
        ("52:54:00:ab:cd:ef", "52:54:00:ab:cd:ef"), ("52-54-00-AB-CD-EF", "52:54:00:ab:cd:ef"), (" 52:54:00:ab:cd:ef\n", "52:54:00:ab:cd:ef"),
        ("52:54:00:ab:cd", nil), ("52:54:00:ab:cd:eg", nil), ("5254.00ab.cdef", nil), ("", nil), ("52:54:00:ab:cd:ef:01", nil), ("052:54:00:ab:cd:e", nil),
        ("\t52:54:00:AB:cd:EF ", "52:54:00:ab:cd:ef"), ("52:54-00:ab:cd:ef", nil), ("52:54:00:ab:cd:e\u{FF10}", nil), ("52:54:00:ab:cd:\u{E9}f", nil),
    ])
    func macParsing(text: String, canonical: String?) {
        #expect(MACAddress(text)?.canonical == canonical)
    }

    @Test("the handler, registered for FindVPSByLease, answers a found lease, not_found for a miss and invalid_argument for bad input (an undecodable payload included)")
    func handler() async throws {
        try await withInventory([
            "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('l', 'vps-1', 'org-1', '52:54:00:00:00:01', '10.0.0.1')",
        ]) { inventory in
            var registry = HandlerRegistry()
            registry.register(RequestMethods.findVPSByLease, FindVPSByLeaseHandler(inventory: inventory))
            let handler = try #require(registry.handler(for: RequestMethods.findVPSByLease.name))
            let context = HandlerContext(requestID: "r", method: RequestMethods.findVPSByLease.name, attempt: 1, environment: "test")
            func query(mac: String = "", ip: String = "") -> Data {
                try! FindVPSByLeaseRequest.with { $0.mac = mac; $0.ip = ip }.serializedBytes()
            }
            let answer = try FindVPSByLeaseResponse(serializedBytes: try await handler.run(query(mac: "52:54:00:00:00:01"), context))
            #expect(answer.vpsID == "vps-1")
            #expect(answer.organizationID == "org-1")
            // An IP is trimmed of spaces, tabs and Unicode spaces around it (and only those).
            for padded in [" 10.0.0.1", "10.0.0.1\t", "\u{00A0}10.0.0.1\u{3000}"] {
                let byIP = try FindVPSByLeaseResponse(serializedBytes: try await handler.run(query(ip: padded), context))
                #expect(byIP.vpsID == "vps-1", "ip \(padded.debugDescription)")
            }
            for (payload, code) in [
                (query(ip: "10.0.0.1\n"), ResponseCode.invalidArgument),
                (query(mac: "52:54:00:00:00:99"), .notFound),
                (query(mac: "nonsense"), .invalidArgument),
                (query(ip: "10.0.0.999"), .invalidArgument),
                (query(), .invalidArgument),
                (Data([0x0a, 0x10, 0x61]), .invalidArgument),
            ] {
                await #expect { try await handler.run(payload, context) } throws: { ($0 as? HandlerError)?.code == code }
            }
        }
    }
}

/// What the writer thread's COMMIT gave, for the lock test to wait on.
private final class ReleaseResult: Sendable {
    let result = Mutex<Result<Void, any Error>?>(nil)
}
