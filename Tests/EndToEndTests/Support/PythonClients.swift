import Foundation
import GatewayProtocol
import TextFormats

/// The Python clients of `scripts/python-clients.sh` (PyPI connectrpc and grpcio, in a
/// virtualenv under .build): real Connect and gRPC implementations written by others.
enum PythonClients {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    static let virtualenv = repository + "/.build/python-clients"
    static let python = virtualenv + "/bin/python"
    static let connectWorker = repository + "/Tests/Clients/connect_worker.py"

    /// Fails with what to run when the virtualenv is missing (`make test` makes it).
    static func require() throws {
        guard FileManager.default.isExecutableFile(atPath: python),
              FileManager.default.fileExists(atPath: virtualenv + "/connect-stubs/obiente") else {
            throw ClusterError("the Python clients are not installed: run scripts/python-clients.sh (make test runs it)")
        }
    }

    /// The environment a client runs with: its stubs, and no proxy for loopback.
    static func environment(stubs: String) -> [String: String] {
        ["PYTHONPATH": virtualenv + "/" + stubs, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"]
    }
}

/// One line a Python client printed: `{"event": "answered", "request_id": …}`.
struct ClientEvent: Sendable {
    let fields: [String: String]
    var name: String { fields["event"] ?? "" }
    subscript(_ key: String) -> String? { fields[key] }
}

extension TestProcess {
    /// The JSON lines of a Python client's output, in order.
    var events: [ClientEvent] {
        log.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else { return nil }
            return ClientEvent(fields: object.mapValues { "\($0)" })
        }
    }

    /// Waits for an event named `name` (and matching `where`).
    func waitForEvent(_ name: String, timeout: Duration = .seconds(20), where condition: @escaping @Sendable (ClientEvent) -> Bool = { _ in true }) async -> ClientEvent? {
        let found = await poll(timeout: timeout) { self.events.contains { $0.name == name && condition($0) } }
        return found ? events.first { $0.name == name && condition($0) } : nil
    }
}

extension Cluster {
    /// A VPS-service instance written with PyPI connectrpc, answering for `leases`
    /// (`(mac, ip, vps)`), over Connect or (with `grpc`) gRPC.
    @discardableResult
    func startConnectWorker(
        instance: String, environment: String, leases: [(mac: String, ip: String, vps: String)] = [],
        grpc: Bool = false, gzip: Bool = true, delay: Duration = .zero, secret: String? = nil, stopAfter: Duration? = nil
    ) throws -> TestProcess {
        try PythonClients.require()
        var arguments = [PythonClients.connectWorker, "--url", gatewayURL, "--secret", secret ?? self.secret,
                         "--instance", instance, "--environment", environment, "--protocol", grpc ? "grpc" : "connect",
                         gzip ? "--gzip" : "--no-gzip", "--delay-ms", "\(delay.wholeMilliseconds)"]
        for lease in leases { arguments += ["--lease", "\(lease.mac)=\(lease.ip)=\(lease.vps)=org-\(environment)"] }
        if let stopAfter { arguments += ["--stop-after", "\(stopAfter.secondsValue)"] }
        return try spawn(name: "python-\(instance)", executable: PythonClients.python, arguments: arguments, environment: PythonClients.environment(stubs: "connect-stubs"))
    }
}
