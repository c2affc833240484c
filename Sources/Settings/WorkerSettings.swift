/// Every setting of `vps-gateway worker`, with its default. `Worker.Configuration`, the
/// command's flags and `--help`, and the supervisor's `environments:` entries read them from
/// here.
public enum WorkerSettings {
    public static let environment = OptionalSetting<String>(
        "env", variable: "VPS_ENVIRONMENT", valueName: "name",
        "The environment this worker answers for (production, beta, dev, ...).")
    public static let inventory = OptionalSetting<String>(
        "inventory", variable: "VPS_INVENTORY_URL", valueName: "url",
        "The environment's inventory: sqlite:PATH, or the platform's database as postgres://USER@HOST[:PORT]/DB[?sslmode=disable|prefer|require|verify-full] (no password in it).")
    public static let inventoryPasswordFile = OptionalSetting<String>(
        "inventory-password-file", unset: "the systemd credential inventory-password ($CREDENTIALS_DIRECTORY/inventory-password) when present",
        variable: "VPS_INVENTORY_PASSWORD_FILE", valueName: "path", "File holding the PostgreSQL inventory's password.")
    public static let instanceID = OptionalSetting<String>(
        "instance-id", unset: "the host name", valueName: "id", "This instance's id, unique among the gateway's clients.")
    public static let node = OptionalSetting<String>(
        "node", unset: "the host name", valueName: "name", "This worker's node name, sent when an endpoint has none.")
    public static let gatewayURL = Setting(
        "gateway-url", default: "http://127.0.0.1:1537", variable: "VPS_GATEWAY_URL", valueName: "url",
        "The gateway to dial; VPS_NODE_GATEWAY_ENDPOINTS (several gateways) wins over VPS_GATEWAY_URL, not over the flag.")
    public static let apiSecretFile = OptionalSetting<String>(
        "api-secret-file", variable: "VPS_GATEWAY_API_SECRET_FILE", valueName: "path",
        "File holding the shared secret (wins over VPS_GATEWAY_API_SECRET).")
    public static let maxConcurrent = Setting(
        "max-concurrent", default: 256, valueName: "count", rule: SettingRule.atLeast(1),
        "Requests handled at once, over all streams; more are answered `unavailable` (the gateway retries them).")
    public static let heartbeatInterval = Setting(
        "heartbeat-interval", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "How often the worker sends a heartbeat.")
    public static let keepaliveInterval = Setting(
        "keepalive-interval", default: Duration.seconds(30), valueName: "duration", rule: SettingRule.positive,
        "How often the worker pings the gateway at the HTTP/2 level, so idle connections are kept and dead ones noticed. Must not be below the gateway's --min-client-ping-interval.")
    public static let backoffInitial = Setting(
        "backoff-initial", default: Duration.seconds(1), valueName: "duration", rule: SettingRule.positive,
        "First reconnect delay.")
    public static let backoffMax = Setting(
        "backoff-max", default: Duration.seconds(60), valueName: "duration", rule: SettingRule.positive,
        "Largest reconnect delay.")
    public static let responseCacheSize = Setting(
        "response-cache-size", default: 100_000, valueName: "count", rule: SettingRule.atLeast(0),
        "Final answers remembered by request id, so a request the gateway repeats (after its crash) is answered without running the handler again; 0 turns it off.")
    public static let responseCacheTTL = Setting(
        "response-cache-ttl", default: Duration.seconds(600), valueName: "duration", rule: SettingRule.positive,
        "How long an answer stays in the response cache (expired ones are dropped as new ones are stored).")
    public static let tlsCA = OptionalSetting<String>(
        "tls-ca", unset: "the system's roots", valueName: "path",
        "For https:// gateways: trust only certificates chaining to this PEM CA.")
    public static let tlsCertificate = OptionalSetting<String>(
        "tls-certificate", valueName: "path",
        "For https:// gateways that require client certificates: this PEM certificate chain (with --tls-key).")
    public static let tlsKey = OptionalSetting<String>(
        "tls-key", valueName: "path", "The PEM private key of --tls-certificate.")
    public static let shutdownGrace = Setting(
        "shutdown-grace", default: Duration.seconds(5), valueName: "duration", rule: SettingRule.positive,
        "On shutdown, how long requests in flight get after `drain`; the process exits within this plus 3 s.")
    public static let simulateLatency = OptionalSetting<Duration>(
        "simulate-latency", unset: "none", valueName: "duration",
        "For tests and benchmarks: delay every answer by this long, as a slow database would.")
    public static let metricsAddress = OptionalSetting<String>(
        "metrics-address", unset: "off", variable: "VPS_WORKER_METRICS_ADDRESS", valueName: "host:port",
        "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9465).")

    /// The settings an entry of the supervisor's `environments:` list may set, by their YAML
    /// keys (besides `name`, `inventory_password_credential` and `extra_arguments`). The
    /// supervisor itself decides the environment (`name`), the gateway to dial (its own
    /// gateway's), the secret (the gateway's) and the grace (from its own).
    public static let configurable: [any AnySetting] = [
        inventory, inventoryPasswordFile, instanceID, node, maxConcurrent, heartbeatInterval, keepaliveInterval,
        backoffInitial, backoffMax, responseCacheSize, responseCacheTTL, metricsAddress,
    ]

    /// Every setting of the command.
    public static let all: [any AnySetting] = configurable + [
        environment, gatewayURL, apiSecretFile, tlsCA, tlsCertificate, tlsKey, shutdownGrace, simulateLatency,
    ]
}

/// Settings more than one role reads.
public enum CommonSettings {
    public static let logLevel = Setting(
        "log-level", default: "info", variable: "VPS_GATEWAY_LOG_LEVEL", valueName: "level",
        rule: SettingRule.oneOf(["trace", "debug", "info", "notice", "warning", "error", "critical"]),
        "Lowest level logged: trace, debug, info, notice, warning, error, critical.")
    public static let logFormat = OptionalSetting<String>(
        "log-format", unset: "journal when stderr is journald's stream, else text", variable: "VPS_GATEWAY_LOG_FORMAT",
        valueName: "format", rule: SettingRule.oneOf(["text", "json", "journal"]),
        "Where and how to log: text or json lines on stderr, or journal (native journald fields).")
    public static let supervisorMetricsAddress = OptionalSetting<String>(
        "metrics-address", unset: "supervisor.metrics_address of the configuration, else off", variable: "VPS_SUPERVISOR_METRICS_ADDRESS",
        valueName: "host:port", "Serve the supervisor's Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9466).")
    public static let migrations = OptionalSetting<String>(
        "migrations", unset: "../share/vps-gateway/migrations next to the binary, else migrations/ of the source tree",
        variable: "VPS_GATEWAY_MIGRATIONS", valueName: "dir", "The journal's migrations directory.")
}
