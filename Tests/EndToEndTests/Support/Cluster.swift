import Foundation
import GatewayAdminClient
import GatewayProtocol
import LeaseInventory
import GRDB
import SwiftProtobuf
import Synchronization
import Testing

/// One test's world: a temp directory, a free port, the processes it starts. Everything is
/// stopped and removed when the body ends, whether it returned or threw.
final class Cluster: Sendable {
    let directory: String
    let port: Int
    let secret: String
    private let processes = Mutex<[TestProcess]>([])
    /// The sockets that hold this cluster's ports (``reserveLoopbackPort()``), closed last.
    private let portHolders: Mutex<[Int32]>
    /// Run at tear-down after the processes stopped, newest first (network namespaces...).
    /// Async, so a clean-up that waits (a database's shutdown) waits without holding one of
    /// the few threads every test's tasks share.
    private let cleanups = Mutex<[@Sendable () async -> Void]>([])

    func onTearDown(_ cleanup: @escaping @Sendable () async -> Void) {
        cleanups.withLock { $0.append(cleanup) }
    }

    var adminSocket: String { directory + "/admin.sock" }
    var journal: String { directory + "/journal.sqlite3" }
    var gatewayURL: String { "http://127.0.0.1:\(port)" }

    private init() throws {
        // `make test` gives each run a directory of its own, so the leftover check after the
        // suite sees only this run's processes (CI may run two suites on one machine).
        let root = ProcessInfo.processInfo.environment["VPSGW_TEST_ROOT"] ?? "/tmp"
        let template = "\(root)/vpsgw-test-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard mkdtemp(&bytes) != nil else { throw ClusterError("mkdtemp failed") }
        directory = String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let (port, holder) = try reserveLoopbackPort()
        self.port = port
        portHolders = Mutex([holder])
        secret = "test-secret-\(UInt32.random(in: 0...UInt32.max))"
    }

    static func with<Result: Sendable>(_ body: (Cluster) async throws -> Result) async throws -> Result {
        let cluster = try Cluster()
        do {
            let result = try await body(cluster)
            await cluster.tearDown(printLogs: false)
            return result
        } catch {
            await cluster.tearDown(printLogs: true)
            throw error
        }
    }

    private func tearDown(printLogs: Bool) async {
        let all = processes.withLock { $0 }
        for process in all { await process.stop() }
        // What the test's processes started (a supervisor's children) ends through its
        // lifeline within its shutdown limit; anything still running after that leaked.
        let leftovers = await leftoverProcesses(within: .seconds(15))
        for leftover in leftovers { kill(leftover.pid, SIGKILL) }
        if !leftovers.isEmpty {
            Issue.record("processes outlived the test: \(leftovers.map { "\($0.pid) \($0.command)" })")
        }
        for cleanup in cleanups.withLock({ $0.reversed() }) { await cleanup() }
        for holder in portHolders.withLock({ $0 }) { close(holder) }
        if printLogs || !leftovers.isEmpty {
            for process in all { print("---- log of \(process.name) ----\n\(process.log.suffix(4000))") }
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Processes with this cluster's directory on their command line that are still there
    /// after `timeout`.
    private func leftoverProcesses(within timeout: Duration) async -> [ProcessEntry] {
        _ = await poll(timeout: timeout) { EndToEndTests.processes(commandLineContaining: self.directory + "/").isEmpty }
        return EndToEndTests.processes(commandLineContaining: directory + "/")
    }

    /// Another port on 127.0.0.1 for this test (a metrics listener, a second gateway, a
    /// database), held until the test ends.
    func reservePort() throws -> Int {
        let (port, holder) = try reserveLoopbackPort()
        portHolders.withLock { $0.append(holder) }
        return port
    }

    // MARK: Processes

    /// Starts a gateway and, unless told otherwise, waits until its admin socket answers.
    @discardableResult
    func startGateway(_ extraArguments: [String] = [], environment: [String: String]? = nil, waitUntilReady: Bool = true, launcher: [String] = []) async throws -> TestProcess {
        let process = try spawn(
            name: "gateway",
            launcher: launcher,
            arguments: ["gateway", "--listen", "127.0.0.1:\(port)", "--admin-socket", adminSocket]
                + (extraArguments.contains("--journal") ? [] : ["--journal", journal])
                + (extraArguments.contains("--dhcp-leases") ? [] : ["--dhcp-leases", "off"]) + extraArguments,
            environment: environment ?? ["GATEWAY_API_SECRET": secret]
        )
        if waitUntilReady {
            // A gateway that exited will not become ready: say so now, not after the time limit.
            let answered = Mutex(false)
            _ = await poll(timeout: .seconds(40)) {
                if (try? await AdminClient.connect(socketPath: self.adminSocket) { try await $0.listClients() }) != nil {
                    answered.withLock { $0 = true }
                    return true
                }
                return !process.isRunning
            }
            guard answered.withLock({ $0 }) else {
                let state = process.isRunning ? "did not become ready within 40 s" : "exited before it became ready"
                throw ClusterError("the gateway \(state):\n\(process.log)")
            }
        }
        return process
    }

    /// Starts a worker of `environment` on `inventory` dialing this cluster's gateway.
    @discardableResult
    func startWorker(
        environment: String,
        instance: String? = nil,
        inventory: String,
        _ extraArguments: [String] = [],
        secret: String? = nil,
        notifySocket: NotifySocket? = nil
    ) throws -> TestProcess {
        try spawn(
            name: "worker-\(instance ?? environment)",
            arguments: [
                "worker", "--env", environment, "--instance-id", instance ?? "\(environment)-1",
                "--gateway-url", gatewayURL, "--inventory", inventory.hasPrefix("postgres") ? inventory : "sqlite:\(inventory)",
                "--backoff-initial", "200ms", "--backoff-max", "1s",
            ] + extraArguments,
            environment: ["VPS_GATEWAY_API_SECRET": secret ?? self.secret].merging(notifySocket.map { ["NOTIFY_SOCKET": $0.path] } ?? [:]) { $1 }
        )
    }

    @discardableResult
    func spawn(name: String, launcher: [String] = [], executable: String? = nil, arguments: [String], environment: [String: String], crashReporter: Bool = false) throws -> TestProcess {
        let count = processes.withLock { $0.count }
        let process = try TestProcess(
            name: name, arguments: arguments, environment: environment,
            logPath: "\(directory)/\(count)-\(name).log", launcher: launcher, executable: executable, crashReporter: crashReporter
        )
        processes.withLock { $0.append(process) }
        return process
    }

    /// Runs the CLI to completion and returns its exit status and output.
    func run(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(30)) async throws -> CLIResult {
        let process = try spawn(name: "cli-\(arguments.first ?? "")", arguments: arguments, environment: environment)
        guard let status = await process.waitForExit(timeout: timeout) else {
            throw ClusterError("`vps-gateway \(arguments.joined(separator: " "))` did not finish within \(timeout)")
        }
        return CLIResult(status: status, output: process.log)
    }

    // MARK: Inventories

    /// A new inventory file with exactly these VPSs, each with a lease.
    func inventory(_ name: String, _ entries: [SampleInventory.Entry] = []) throws -> String {
        let path = "\(directory)/\(name).sqlite3"
        try SampleInventory.create(at: path, environment: name, rows: 0)
        let database = try DatabaseQueue(path: path)
        try database.write { db in
            for entry in entries {
                try db.execute(sql: "INSERT INTO vps_instances (id, organization_id, mac_address) VALUES (?, ?, ?)", arguments: [entry.vpsID, entry.organizationID, entry.mac])
                try db.execute(
                    sql: "INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES (?, ?, ?, ?, ?)",
                    arguments: ["lease-\(entry.vpsID)", entry.vpsID, entry.organizationID, entry.mac, entry.ip]
                )
            }
        }
        try database.close()
        return path
    }

    // MARK: Admin API

    func clients() async throws -> [AdminClientInfo] {
        try await AdminClient.connect(socketPath: adminSocket) { try await $0.listClients() }
    }

    /// Waits until exactly these instance ids are registered.
    func waitForClients(_ instances: Set<String>, timeout: Duration = .seconds(40)) async throws {
        let registered = await poll(timeout: timeout) {
            let current = (try? await self.clients()).map { Set($0.map(\.instanceID)) }
            return current == instances
        }
        if !registered {
            throw ClusterError("expected clients \(instances.sorted()), have \((try? await clients().map(\.instanceID)) ?? [])")
        }
    }

    /// Waits until the gateway has a request in flight on `instance`'s stream.
    func waitForRequestInFlight(at instance: String, timeout: Duration = .seconds(40)) async throws {
        let sent = await poll(timeout: timeout) {
            (try? await self.clients())?.first { $0.instanceID == instance }.map { $0.inFlight > 0 } ?? false
        }
        if !sent { throw ClusterError("no request reached \(instance) within \(timeout)") }
    }

    func call(_ request: AdminCallRequest) async throws -> AdminCallResponse {
        try await AdminClient.connect(socketPath: adminSocket) { try await $0.call(request) }
    }

    /// FindVPSByLease through the gateway; the decoded owner when the outcome is `ok`.
    func lookup(mac: String, ip: String = "", environment: String = "", timeoutMs: UInt32 = 5000, requestID: String = "") async throws -> (response: AdminCallResponse, owner: FindVPSByLeaseResponse?) {
        let response = try await call(.with {
            $0.method = RequestMethods.findVPSByLease.name
            $0.payload = try! FindVPSByLeaseRequest.with { $0.mac = mac; $0.ip = ip }.serializedBytes()
            $0.environment = environment
            $0.timeoutMs = timeoutMs
            $0.requestID = requestID
        })
        let owner = response.outcome == .ok ? try FindVPSByLeaseResponse(serializedBytes: response.payload) : nil
        return (response, owner)
    }
}

struct CLIResult: Sendable {
    var status: Int32
    var output: String
}

struct ClusterError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension SampleInventory.Entry {
    init(_ vpsID: String, mac: String, ip: String, organization: String = "org-test") {
        self.init(vpsID: vpsID, organizationID: organization, mac: mac, ip: ip)
    }
}
