/// One exported metric: its name (with its unit suffix, Prometheus style), its help text and
/// its label names, defined once here and used by every role that records it.
public struct MetricFamily: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case counter
        case gauge
        /// Seconds, with these upper bounds.
        case histogram(buckets: [Duration])
    }

    /// `vps_gateway_calls` for `vps_gateway_calls_total`.
    public let baseName: String
    /// `total`, `seconds` or empty.
    public let unit: String
    public let help: String
    public let kind: Kind
    public let labels: [String]

    /// `vps_gateway_calls_total`: stored, since every recording looks its handle up by it.
    public let name: String

    public init(_ baseName: String, unit: String, kind: Kind, labels: [String] = [], help: String) {
        self.baseName = baseName
        self.unit = unit
        self.kind = kind
        self.labels = labels
        self.help = help
        self.name = unit.isEmpty ? baseName : "\(baseName)_\(unit)"
    }
}

/// From a quick in-memory answer (100 µs) to a call that ran into its deadline (30 s).
private let callBuckets: [Duration] = [
    .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
    .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
    .seconds(2), .seconds(5), .seconds(10), .seconds(30),
]

/// Every metric the product exports.
public enum Metric {
    // The gateway.
    public static let calls = MetricFamily("vps_gateway_calls", unit: "total", kind: .counter, labels: ["method", "outcome"],
                                           help: "Calls finished through the admin API, by method and outcome.")
    public static let callDuration = MetricFamily("vps_gateway_call_duration", unit: "seconds", kind: .histogram(buckets: callBuckets), labels: ["method"],
                                                  help: "Time from a call's arrival to its answer, journal included.")
    public static let clients = MetricFamily("vps_gateway_clients", unit: "", kind: .gauge, labels: ["environment"],
                                             help: "VPS-service instances registered now, by environment.")
    public static let journalRows = MetricFamily("vps_gateway_journal_rows", unit: "", kind: .gauge, labels: ["state"],
                                                 help: "Rows in the request journal by state, as of the last upkeep.")
    public static let journalCommitDuration = MetricFamily("vps_gateway_journal_commit_duration", unit: "seconds", kind: .histogram(buckets: callBuckets),
                                                           help: "Duration of one group commit of the journal, fsync included.")
    public static let leases = MetricFamily("vps_gateway_leases", unit: "", kind: .gauge, labels: ["state"],
                                            help: "Active DHCP leases by what their lookup found: found, not_found, failed, pending.")
    public static let hostsFileWrites = MetricFamily("vps_gateway_hosts_file_writes", unit: "total", kind: .counter,
                                                     help: "Times the hosts file was replaced because its content changed.")
    public static let streamMessages = MetricFamily("vps_gateway_stream_messages", unit: "total", kind: .counter, labels: ["direction", "type"],
                                                    help: "Messages on registered streams, received (in) and queued to send (out), by type.")

    // The worker.
    public static let workerRequests = MetricFamily("vps_gateway_worker_requests", unit: "total", kind: .counter, labels: ["method", "code"],
                                                    help: "Requests the worker answered, by method and response code.")
    public static let workerRequestDuration = MetricFamily("vps_gateway_worker_request_duration", unit: "seconds", kind: .histogram(buckets: callBuckets), labels: ["method"],
                                                           help: "Time from a request's arrival at the worker to its answer.")
    public static let workerStreams = MetricFamily("vps_gateway_worker_streams", unit: "", kind: .gauge, labels: ["gateway", "state"],
                                                   help: "The worker's stream to each gateway: 1 for the state it is in (connecting, registered, backoff), 0 for the others.")
    public static let workerInventoryErrors = MetricFamily("vps_gateway_worker_inventory_errors", unit: "total", kind: .counter,
                                                           help: "Inventory lookups that failed (database unreachable or a query error), not counting not found.")

    // The supervisor.
    public static let childRestarts = MetricFamily("vps_gateway_supervisor_child_restarts", unit: "total", kind: .counter, labels: ["child"],
                                                   help: "Restarts of each supervised child.")
    public static let childUp = MetricFamily("vps_gateway_supervisor_child_up", unit: "", kind: .gauge, labels: ["child"],
                                             help: "1 while the child runs, 0 while it is down, waiting for its restart or given up.")

    /// Every family above, for documentation and for checking dashboards against.
    public static let all: [MetricFamily] = [
        calls, callDuration, clients, journalRows, journalCommitDuration, leases, hostsFileWrites, streamMessages,
        workerRequests, workerRequestDuration, workerStreams, workerInventoryErrors, childRestarts, childUp,
    ]
}
