import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for one test (Debian's `postgresql`): `initdb` into a directory
/// of its own, listening on a free loopback port, run as the `postgres` user when the tests
/// run as root (the server refuses root). Stopped (fast shutdown, then SIGKILL) and removed
/// at the cluster's teardown, on every path.
final class PostgresServer: Sendable {
    /// The Debian install's binaries (`/usr/lib/postgresql/N/bin`), newest first.
    static let binaries: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        return versions.map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: $0 + "/postgres") }
    }()

    static var isAvailable: Bool {
        binaries != nil && (geteuid() != 0 || getpwnam("postgres") != nil) && FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")
    }

    let port: Int
    let directory: String
    let superuserPassword = "super-\(UInt32.random(in: 0...UInt32.max))"
    private let cluster: Cluster
    private let server = ProcessBox()

    private init(cluster: Cluster, port: Int, directory: String) {
        self.cluster = cluster
        self.port = port
        self.directory = directory
    }

    /// The user the server runs as: `postgres` under root, else whoever runs the tests.
    private static var launcher: [String] {
        geteuid() == 0 ? ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : []
    }

    static func start(in cluster: Cluster) async throws -> PostgresServer {
        guard let binaries else { throw ClusterError("PostgreSQL is not installed: apt-get install postgresql (scripts/install-deps.sh does)") }
        // Outside the cluster's directory: the server's user must own its data directory and
        // reach it, and the cluster's is private to root.
        var template = Array("/tmp/vpsgw-pg-XXXXXX".utf8CString)
        guard mkdtemp(&template) != nil else { throw ClusterError("mkdtemp failed") }
        let directory = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        cluster.onTearDown { try? FileManager.default.removeItem(atPath: directory) }
        if geteuid() == 0, let user = getpwnam("postgres") {
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        let server = PostgresServer(cluster: cluster, port: try cluster.reservePort(), directory: directory)
        cluster.onTearDown { await server.stop() }
        let passwordFile = directory + "/superuser-password"
        try server.superuserPassword.write(toFile: passwordFile, atomically: false, encoding: .utf8)
        if geteuid() == 0, let user = getpwnam("postgres") { chown(passwordFile, user.pointee.pw_uid, user.pointee.pw_gid) }
        let initdb = try TestProcess(
            name: "initdb", arguments: ["-D", directory + "/data", "-U", "postgres", "--pwfile", passwordFile, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--locale", "C"],
            environment: [:], logPath: cluster.directory + "/initdb.log", launcher: launcher, executable: binaries + "/initdb"
        )
        guard let status = await initdb.waitForExit(timeout: .seconds(120)), status == 0 else {
            initdb.signal(SIGKILL)
            throw ClusterError("initdb failed: \(initdb.log.suffix(2000))")
        }
        try await server.startServer()
        return server
    }

    /// Starts the server on its port (again, after ``stop()``) and waits until it takes queries.
    func startServer() async throws {
        guard let binaries = Self.binaries else { return }
        let process = try TestProcess(
            name: "postgres",
            arguments: ["-D", directory + "/data", "-p", "\(port)", "-k", directory, "-c", "listen_addresses=127.0.0.1",
                        "-c", "fsync=off", "-c", "max_connections=50", "-c", "shared_buffers=16MB"],
            environment: [:], logPath: cluster.directory + "/postgres-\(port)-\(UInt32.random(in: 0...UInt32.max)).log",
            launcher: Self.launcher, executable: binaries + "/postgres"
        )
        server.set(process)
        let ready = await poll(timeout: .seconds(60)) { (try? await self.psql("SELECT 1", timeout: .seconds(5))) != nil }
        guard ready else { throw ClusterError("PostgreSQL did not accept connections on port \(port): \(process.log.suffix(2000))") }
    }

    /// Fast shutdown (SIGINT: sessions are ended), as an operator's `systemctl stop` would.
    func stop() async {
        guard let process = server.get() else { return }
        process.signal(SIGINT)
        if await process.waitForExit(timeout: .seconds(20)) == nil { await process.stop() }
    }

    /// Runs `sql` with psql as the superuser against `database`; throws with psql's output when
    /// it fails.
    @discardableResult
    func psql(_ sql: String, database: String = "postgres", timeout: Duration = .seconds(30)) async throws -> String {
        guard let binaries = Self.binaries else { throw ClusterError("no PostgreSQL") }
        let process = try TestProcess(
            name: "psql",
            arguments: ["-h", "127.0.0.1", "-p", "\(port)", "-U", "postgres", "-d", database, "-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql],
            environment: ["PGPASSWORD": superuserPassword, "PGCONNECT_TIMEOUT": "5"],
            logPath: cluster.directory + "/psql-\(UInt32.random(in: 0...UInt32.max)).log", executable: binaries + "/psql"
        )
        guard let status = await process.waitForExit(timeout: timeout) else {
            await process.stop()
            throw ClusterError("psql did not finish within \(timeout)")
        }
        let output = process.log
        try? FileManager.default.removeItem(atPath: process.logPath)
        guard status == 0 else { throw ClusterError("psql failed (\(status)): \(output)") }
        return output
    }

    func url(user: String, database: String, sslMode: String = "disable") -> String {
        "postgres://\(user)@127.0.0.1:\(port)/\(database)?sslmode=\(sslMode)"
    }

    /// The platform's tables in a new database, a read-only role with exactly the grants the
    /// lookups need, and `rows` as (vps id, organization, MAC, IP, deleted).
    func createPlatformDatabase(_ database: String, role: String, password: String, rows: [(String, String, String, String, Bool)]) async throws {
        try await psql("CREATE DATABASE \(database)")
        try await psql("""
            CREATE TABLE vps_instances (id text PRIMARY KEY, organization_id text, mac_address text, deleted_at timestamptz);
            CREATE TABLE dhcp_leases (id text PRIMARY KEY, vps_id text, organization_id text, mac_address text UNIQUE,
                ip_address text, is_public boolean, expires_at timestamptz, gateway_node text);
            CREATE INDEX ON dhcp_leases (ip_address);
            CREATE INDEX ON dhcp_leases (lower(trim(mac_address)));
            CREATE INDEX ON vps_instances (mac_address);
            CREATE INDEX ON vps_instances (lower(trim(mac_address)));
            CREATE ROLE \(role) LOGIN PASSWORD '\(password)';
            GRANT CONNECT ON DATABASE \(database) TO \(role);
            GRANT USAGE ON SCHEMA public TO \(role);
            GRANT SELECT (id, organization_id, mac_address, deleted_at) ON vps_instances TO \(role);
            GRANT SELECT (id, vps_id, organization_id, mac_address, ip_address) ON dhcp_leases TO \(role);
            """, database: database)
        for (vps, organization, mac, ip, deleted) in rows {
            try await psql("""
                INSERT INTO vps_instances VALUES ('\(vps)', '\(organization)', '\(mac)', \(deleted ? "now()" : "NULL"));
                INSERT INTO dhcp_leases (id, vps_id, organization_id, mac_address, ip_address) VALUES ('lease-\(vps)', '\(vps)', '\(organization)', '\(mac)', '\(ip)');
                """, database: database)
        }
    }
}

private final class ProcessBox: Sendable {
    private let process = Mutex<TestProcess?>(nil)
    func set(_ process: TestProcess) { self.process.withLock { $0 = process } }
    func get() -> TestProcess? { process.withLock { $0 } }
}
