/// Every setting of `vps-gateway gateway`, with its default. `Gateway.Configuration`, the
/// command's flags and `--help`, and the supervisor's `gateway:` YAML section all read them
/// from here.
public enum GatewaySettings {
    public static let listen = Setting(
        "listen", default: "0.0.0.0:1537", valueName: "host:port", rule: ListenRule.check,
        "Address to accept streams on, HOST:PORT; when not given, GATEWAY_GRPC_PORT sets the port.")
    public static let apiSecretFile = OptionalSetting<String>(
        "api-secret-file", variable: "GATEWAY_API_SECRET_FILE", valueName: "path",
        "File holding the shared secret (wins over GATEWAY_API_SECRET).")
    public static let adminSocket = Setting(
        "admin-socket", default: "/run/vps-gateway/admin.sock", variable: "GATEWAY_ADMIN_SOCKET", valueName: "path",
        "The gateway's admin socket.")
    public static let heartbeatInterval = Setting(
        "heartbeat-interval", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "How often the gateway sends a heartbeat on each stream; a stream silent for 3 intervals is evicted.")
    public static let registrationTimeout = Setting(
        "registration-timeout", default: Duration.seconds(10), valueName: "duration", rule: SettingRule.positive,
        "How long a new stream has to send `register`.")
    public static let sendQueue = Setting(
        "send-queue", default: 1024, valueName: "count", rule: SettingRule.atLeast(1),
        "Messages that may wait for one slow stream before sends to it fail.")
    public static let defaultTimeout = Setting(
        "default-timeout", default: Duration.seconds(10), valueName: "duration", rule: SettingRule.positive,
        "Timeout of a call that gives none (timeout_ms 0).")
    public static let shutdownGrace = Setting(
        "shutdown-grace", default: Duration.seconds(5), valueName: "duration",
        "On shutdown, how long in-flight calls get to finish.")
    public static let minClientPingInterval = Setting(
        "min-client-ping-interval", default: Duration.seconds(10), valueName: "duration", rule: SettingRule.positive,
        "The shortest HTTP/2 ping interval tolerated from a client; faster pingers get GOAWAY. Must be below the workers' --keepalive-interval.")
    public static let keepaliveInterval = Setting(
        "keepalive-interval", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "HTTP/2 keepalive: ping a connection that read nothing for this long; no answer within 20 s closes it.")
    public static let maxConnections = Setting(
        "max-connections", default: 4096, valueName: "count", rule: SettingRule.atLeast(1),
        "Connections open at once (stream port, and admin socket); more are closed as they arrive.")
    public static let maxClients = Setting(
        "max-clients", default: 256, valueName: "count", rule: SettingRule.atLeast(1),
        "Instances registered at once; a new instance id beyond it is refused (resource_exhausted).")
    public static let maxConcurrentStreams = Setting(
        "max-concurrent-streams", default: 256, valueName: "count", rule: SettingRule.within(1...100_000),
        "Streams one client may have open at once on one connection.")
    public static let maxMessageSize = Setting(
        "max-message-size", default: 4 * 1024 * 1024, valueName: "bytes", rule: SettingRule.within(1024...(64 << 20)),
        "The largest message accepted, after decompression.")
    public static let maxHeaderListSize = Setting(
        "max-header-list-size", default: 16 * 1024, valueName: "bytes", rule: SettingRule.within(1024...(1 << 20)),
        "The largest request header block.")
    public static let idleConnectionTimeout = Setting(
        "idle-connection-timeout", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "A connection that sent no HTTP/2 preface, or has had no stream open, for this long is closed.")
    public static let eventLoops = Setting(
        "event-loops", default: 1, valueName: "count", rule: SettingRule.within(1...64),
        "Threads serving the network (stream port, admin socket, metrics). One serves thousands of calls a second at less CPU per call than several, which hand each call from thread to thread; raise it only when the gateway's NIO-SGLTN thread runs at 100 % in `top -H`.")
    public static let journal = Setting(
        "journal", default: "/var/lib/vps-gateway/journal.sqlite3", variable: "GATEWAY_JOURNAL", valueName: "path|off",
        "The request journal (SQLite, WAL), or `off` to neither record nor retry calls.")
    public static let journalSync = Setting(
        "journal-sync", default: "full", valueName: "full|normal", rule: SettingRule.oneOf(["full", "normal"]),
        "full: a recorded request survives power loss. normal: faster, but may lose the last commits on power loss (never on a crash).")
    public static let journalRetention = Setting(
        "journal-retention", default: Duration.seconds(7 * 86_400), valueName: "duration", rule: SettingRule.positive,
        "Finished journal rows older than this are pruned in the background.")
    public static let journalUpkeepInterval = Setting(
        "journal-upkeep-interval", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "How often finished journal rows are pruned and the WAL is checkpointed.")
    public static let maxStoredResult = Setting(
        "max-stored-result", default: 64 * 1024, valueName: "bytes", rule: SettingRule.atLeast(0),
        "The largest answer kept in the journal with its finished row; larger ones go to their caller but are not stored.")
    public static let maxAttempts = Setting(
        "max-attempts", default: 5, valueName: "count", rule: SettingRule.within(1...100),
        "Attempts of a request whose attempts keep failing (a dropped stream, an internal error).")
    public static let metricsAddress = OptionalSetting<String>(
        "metrics-address", unset: "off", variable: "VPS_GATEWAY_METRICS_ADDRESS", valueName: "host:port",
        "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464).")
    /// Debian's dnsmasq writes its leases here.
    public static let dhcpLeases = Setting(
        "dhcp-leases", default: "/var/lib/misc/dnsmasq.leases", valueName: "path|off",
        "dnsmasq's lease file to watch, or `off`; when not given, GATEWAY_DHCP_LEASES_DIR names its directory.")
    /// In the gateway's state directory: the lease file's directory is dnsmasq's.
    public static let dhcpHosts = Setting(
        "dhcp-hosts", default: "/var/lib/vps-gateway/vps-hosts", valueName: "path",
        "The hosts file dnsmasq reads (addn-hosts) that the gateway writes.")
    public static let dnsmasqPidFile = OptionalSetting<String>(
        "dnsmasq-pid-file", unset: "no signal", variable: "GATEWAY_DNSMASQ_PID_FILE", valueName: "path",
        "dnsmasq's pid file; the gateway sends that dnsmasq SIGHUP after the hosts file changed.")
    public static let reconcileInterval = Setting(
        "reconcile-interval", default: Duration.seconds(30), variable: "GATEWAY_RECONCILE_INTERVAL", valueName: "duration",
        rule: SettingRule.positive, "Re-read the lease file at least this often (inotify wakes it sooner).")
    public static let vpsHostnamePattern = OptionalSetting<String>(
        "vps-hostname-pattern", unset: "every lease is looked up by MAC and IP", valueName: "glob",
        "Opt in: leases whose hostname matches this glob (like vps-*) are taken to name their VPS and are not looked up. Risk: the hostname is the tenant's choice, so a VM can claim another VPS's name and keep its real owner out of the hosts file.")
    public static let negativeCacheTTL = Setting(
        "negative-cache-ttl", default: Duration.seconds(300), valueName: "duration", rule: SettingRule.positive,
        "How long a lease nobody owns is believed unowned before asking again.")
    public static let ownerRecheck = Setting(
        "owner-recheck", default: Duration.seconds(600), valueName: "duration", rule: SettingRule.positive,
        "How long a lease's owner is trusted before it is asked again (a deleted VPS then drops out of the hosts file).")
    public static let environments = OptionalSetting<String>(
        "environments", unset: "any environment", variable: "GATEWAY_ENVIRONMENTS", valueName: "names",
        "The environments this node serves, comma-separated (production,beta,dev). Calls to all environments go to these only, a \"not found\" needs each of them to answer, and a start waits for them.")
    public static let environmentsFile = OptionalSetting<String>(
        "environments-file", valueName: "path",
        "Like --environments, from a file (one name per line), re-read on SIGHUP: what the supervisor uses.")
    public static let tlsCertificate = OptionalSetting<String>(
        "tls-certificate", unset: "cleartext h2c", valueName: "path",
        "Serve h2 over TLS on the stream port with this PEM certificate chain (with --tls-key). Under systemd: a LoadCredential= file in $CREDENTIALS_DIRECTORY.")
    public static let tlsKey = OptionalSetting<String>(
        "tls-key", valueName: "path", "The PEM private key of --tls-certificate.")
    public static let tlsClientCA = OptionalSetting<String>(
        "tls-client-ca", unset: "no client certificates", valueName: "path",
        "Require client certificates signed by this PEM CA (mutual TLS); needs --tls-certificate.")

    /// The settings the supervisor's `gateway:` section may set, by their YAML keys. The
    /// supervisor itself decides the grace (from its own), the environments (from the file's
    /// list) and the logging (from `supervisor:`).
    public static let configurable: [any AnySetting] = [
        listen, apiSecretFile, adminSocket, heartbeatInterval, registrationTimeout, sendQueue, defaultTimeout,
        minClientPingInterval, keepaliveInterval, maxConnections, maxClients, maxConcurrentStreams, maxMessageSize,
        maxHeaderListSize, idleConnectionTimeout, eventLoops, journal, journalSync, journalRetention, journalUpkeepInterval,
        maxStoredResult, maxAttempts, metricsAddress, dhcpLeases, dhcpHosts, dnsmasqPidFile, reconcileInterval,
        vpsHostnamePattern, negativeCacheTTL, ownerRecheck, tlsCertificate, tlsKey, tlsClientCA,
    ]

    /// Every setting of the command.
    public static let all: [any AnySetting] = configurable + [shutdownGrace, environments, environmentsFile]
}

/// `HOST:PORT`, `[V6]:PORT` or `:PORT`, port 0 to 65535.
enum ListenRule {
    @Sendable static func check(_ text: String) -> String? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port),
              !text[..<colon].contains(" ")
        else {
            return "is not HOST:PORT; expected e.g. 0.0.0.0:1537, [::]:1537 or 127.0.0.1:0"
        }
        return nil
    }
}
