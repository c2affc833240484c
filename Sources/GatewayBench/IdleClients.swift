import Foundation
public import GatewayAdminClient
import GatewayProtocol
public import GatewayWorker
import Logging
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// Holds many registered but idle streams open from one process, to measure what each costs
/// the gateway. Every stream is a real ``Worker`` with its own connection and instance id.
public struct IdleClients: Sendable {
    public struct Report: Codable, Sendable {
        public var idleClients: Int
        public var registered: Int
        public var secondsToRegister: Double
        /// The gateway's resident memory before the clients connected and while they were.
        public var gatewayRSSKBBefore: Int?
        public var gatewayRSSKBAfter: Int?
        public var perClientKB: Double?

        enum CodingKeys: String, CodingKey {
            case idleClients = "idle_clients", registered
            case secondsToRegister = "seconds_to_register"
            case gatewayRSSKBBefore = "gateway_rss_kb_before", gatewayRSSKBAfter = "gateway_rss_kb_after"
            case perClientKB = "per_client_kb"
        }
    }

    public var count: Int
    public var endpoint: GatewayEndpoint
    public var apiSecret: String
    /// The gateway's pid, to read its resident memory from /proc.
    public var gatewayPID: Int32?
    /// How long to hold the clients after they all registered.
    public var hold: Duration

    public init(count: Int, endpoint: GatewayEndpoint, apiSecret: String, gatewayPID: Int32?, hold: Duration) {
        self.count = count
        self.endpoint = endpoint
        self.apiSecret = apiSecret
        self.gatewayPID = gatewayPID
        self.hold = hold
    }

    /// Connects the clients, waits (at most two minutes) until the gateway lists them all,
    /// measures, holds, and disconnects them.
    public func run(admin: AdminClient, progress: @Sendable @escaping (Int) -> Void = { _ in }) async throws -> Report {
        Self.raiseFileLimit(to: count + 256)
        let before = gatewayPID.flatMap(Self.residentKB)
        let started = ContinuousClock.now
        return try await withThrowingTaskGroup(of: Report?.self) { group in
            for index in 0..<count {
                var configuration = Worker.Configuration(
                    endpoints: [endpoint], apiSecret: apiSecret,
                    instanceID: String(format: "bench-idle-%05d", index), environment: "bench-idle"
                )
                configuration.backoff = .init(initial: .milliseconds(200), maximum: .seconds(2))
                let worker = Worker(configuration: configuration, handlers: HandlerRegistry(), logger: Logger(label: "idle", factory: { _ in SwiftLogNoOpLogHandler() }))
                group.addTask {
                    try await worker.run()
                    return nil
                }
            }
            group.addTask {
                var registered = 0
                let deadline = ContinuousClock.now + .seconds(120)
                while registered < count && ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(250))
                    registered = try await admin.listClients(environment: "bench-idle").count
                    progress(registered)
                }
                let elapsed = ContinuousClock.now - started
                try await Task.sleep(for: hold)
                let after = gatewayPID.flatMap(Self.residentKB)
                var perClient: Double?
                if let before, let after, registered > 0 { perClient = (Double(after - before) / Double(registered) * 10).rounded() / 10 }
                return Report(
                    idleClients: count, registered: registered,
                    secondsToRegister: elapsed.secondsValue,
                    gatewayRSSKBBefore: before, gatewayRSSKBAfter: after, perClientKB: perClient
                )
            }
            var report: Report?
            while let next = try await group.next() {
                if let next { report = next; group.cancelAll() }
            }
            return report!
        }
    }

    /// VmRSS of a process in KiB, from /proc.
    static func residentKB(of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        return line?.split(separator: " ").dropFirst().first.flatMap { Int($0) }
    }

    /// One socket per client: lift the soft descriptor limit as far as the hard one allows.
    static func raiseFileLimit(to wanted: Int) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let target = min(rlim_t(wanted), limit.rlim_max)
        if limit.rlim_cur < target {
            limit.rlim_cur = target
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }
}
