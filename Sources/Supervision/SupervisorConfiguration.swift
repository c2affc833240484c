import Foundation
public import Settings
import TextFormats
import Yams

/// The one-box install, read from a YAML file: the gateway's settings, the environments (one
/// worker each) and how the supervisor runs them. Every key is optional but `environments`'
/// `name` and `inventory`; `examples/*.yaml` document each.
public struct SupervisorConfiguration: Sendable, Equatable {
    public struct Gateway: Sendable, Equatable {
        /// The gateway settings the file gives, under their YAML keys (`GatewaySettings.configurable`);
        /// the others keep the defaults defined there.
        public var settings = SettingValues()
        /// The name of a systemd credential (`LoadCredential=`) holding the secret.
        public var apiSecretCredential: String?
        public var extraArguments: [String] = []

        public var listen: String { settings[GatewaySettings.listen] }
        public var adminSocket: String { settings[GatewaySettings.adminSocket] }
        public var journal: String { settings[GatewaySettings.journal] }
        public var dhcpLeases: String { settings[GatewaySettings.dhcpLeases] }
        public var dhcpHosts: String { settings[GatewaySettings.dhcpHosts] }
        /// A file holding the shared secret.
        public var apiSecretFile: String? { settings[GatewaySettings.apiSecretFile] }
    }

    public struct Environment: Sendable, Equatable {
        public var name: String
        /// The worker settings the entry gives, under their YAML keys (`WorkerSettings.configurable`);
        /// `inventory` is required.
        public var settings = SettingValues()
        /// For a PostgreSQL inventory: the name of a systemd credential (`LoadCredential=`)
        /// holding its password (or `inventory_password_file`).
        public var inventoryPasswordCredential: String?
        public var extraArguments: [String] = []

        /// `sqlite:PATH` or `postgres://USER@HOST[:PORT]/DB[?sslmode=…]` (no password in it).
        public var inventory: String { settings[WorkerSettings.inventory] ?? "" }
        public var inventoryPasswordFile: String? { settings[WorkerSettings.inventoryPasswordFile] }
        /// Default: `<host name>-<name>`.
        public var instanceID: String? { settings[WorkerSettings.instanceID] }
    }

    public struct Policy: Sendable, Equatable {
        /// `gateway`: READY=1 once the gateway is ready; `all-workers`: also every worker.
        public var readyWhen = "gateway"
        public var restartInitialDelay: Duration = .milliseconds(100)
        public var restartMaxDelay: Duration = .seconds(30)
        /// At most this many restarts of one child within `intensityPeriod`; then it is failed.
        public var intensity = 5
        public var intensityPeriod: Duration = .seconds(60)
        /// A child that stayed up this long resets its backoff.
        public var stableAfter: Duration = .seconds(10)
        /// Exit non-zero when a child is given up, so systemd's `Restart=` takes over.
        public var escalate = false
        /// Each child must ping within this; one that stops is killed with SIGABRT.
        public var childWatchdog: Duration = .seconds(10)
        /// On shutdown, how long children get after SIGTERM before SIGKILL.
        public var shutdownGrace: Duration = .seconds(10)
        /// Where the children's notify sockets live.
        public var notifyDirectory = "/run/vps-gateway/notify"
        /// Passed to children as VPS_GATEWAY_LOG_LEVEL / VPS_GATEWAY_LOG_FORMAT.
        public var logLevel: String?
        public var logFormat: String?
        /// The supervisor's own Prometheus metrics (`HOST:PORT`); nil: off.
        public var metricsAddress: String?
    }

    public var gateway = Gateway()
    public var environments: [Environment] = []
    public var supervisor = Policy()

    public init() {}

    /// Reads and checks `path`. Every problem found is named in one error.
    public static func load(path: String) throws -> SupervisorConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SupervisorError(code: .invalidConfiguration, message: "cannot read the configuration file '\(path)'")
        }
        let (configuration, problems) = parse(String(decoding: data, as: UTF8.self), source: path)
        guard problems.isEmpty, let configuration else {
            throw SupervisorError(code: .invalidConfiguration, message: "'\(path)' has \(problems.count) problem(s):\n  - " + problems.joined(separator: "\n  - "))
        }
        return configuration
    }

    /// Parses YAML text; returns the configuration when there are no problems, and every
    /// problem found (unknown keys, wrong types, bad values) either way.
    public static func parse(_ text: String, source: String) -> (SupervisorConfiguration?, [String]) {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            return (nil, ["not valid YAML: \(error)"])
        }
        var reader = Reader()
        var configuration = SupervisorConfiguration()
        guard let root, case .mapping = root else {
            return (nil, ["the file must be a YAML mapping with gateway, environments and supervisor sections"])
        }
        reader.keys(root, allowed: ["gateway", "environments", "supervisor"], at: "")
        if let gateway = root["gateway"] {
            let settings = GatewaySettings.configurable
            reader.keys(gateway, allowed: Set(settings.map(\.yamlKey) + ["api_secret_credential", "extra_arguments"]), at: "gateway")
            var section = Gateway()
            reader.settings(settings, from: gateway, at: "gateway", into: &section.settings)
            section.apiSecretCredential = reader.string(gateway, "api_secret_credential", at: "gateway")
            section.extraArguments = reader.strings(gateway, "extra_arguments", at: "gateway") ?? []
            configuration.gateway = section
        }
        if let environments = root["environments"] {
            guard case .sequence(let list) = environments else {
                reader.problems.append("environments: expected a list of {name, inventory, instance_id}")
                return (nil, reader.problems)
            }
            let settings = WorkerSettings.configurable
            for (index, node) in list.enumerated() {
                let at = "environments[\(index)]"
                reader.keys(node, allowed: Set(settings.map(\.yamlKey) + ["name", "inventory_password_credential", "extra_arguments"]), at: at)
                var environment = Environment(name: reader.string(node, "name", at: at, required: true) ?? "")
                _ = reader.string(node, WorkerSettings.inventory.yamlKey, at: at, required: true)
                reader.settings(settings, from: node, at: at, into: &environment.settings)
                environment.inventoryPasswordCredential = reader.string(node, "inventory_password_credential", at: at)
                environment.extraArguments = reader.strings(node, "extra_arguments", at: at) ?? []
                configuration.environments.append(environment)
            }
        }
        if let policy = root["supervisor"] {
            let at = "supervisor"
            reader.keys(policy, allowed: ["ready_when", "restart_initial_delay", "restart_max_delay", "intensity", "intensity_period", "stable_after", "escalate", "child_watchdog", "shutdown_grace", "notify_directory", "log_level", "log_format", "metrics_address"], at: at)
            var settings = Policy()
            reader.string(policy, "ready_when", at: at).map { settings.readyWhen = $0 }
            reader.duration(policy, "restart_initial_delay", at: at).map { settings.restartInitialDelay = $0 }
            reader.duration(policy, "restart_max_delay", at: at).map { settings.restartMaxDelay = $0 }
            reader.int(policy, "intensity", at: at).map { settings.intensity = $0 }
            reader.duration(policy, "intensity_period", at: at).map { settings.intensityPeriod = $0 }
            reader.duration(policy, "stable_after", at: at).map { settings.stableAfter = $0 }
            reader.bool(policy, "escalate", at: at).map { settings.escalate = $0 }
            reader.duration(policy, "child_watchdog", at: at).map { settings.childWatchdog = $0 }
            reader.duration(policy, "shutdown_grace", at: at).map { settings.shutdownGrace = $0 }
            reader.string(policy, "notify_directory", at: at).map { settings.notifyDirectory = $0 }
            settings.logLevel = reader.string(policy, "log_level", at: at)
            settings.logFormat = reader.string(policy, "log_format", at: at)
            settings.metricsAddress = reader.string(policy, "metrics_address", at: at)
            configuration.supervisor = settings
        }
        let problems = reader.problems + configuration.problems()
        return (problems.isEmpty ? configuration : nil, problems)
    }

    /// Value checks beyond the file's shape.
    func problems() -> [String] {
        var problems: [String] = []
        if gateway.apiSecretFile != nil && gateway.apiSecretCredential != nil {
            problems.append("gateway: give api_secret_file or api_secret_credential, not both")
        }
        var names: Set<String> = [], instances: Set<String> = []
        for (index, environment) in environments.enumerated() {
            let at = "environments[\(index)]"
            if environment.name.isEmpty || !environment.name.allSatisfy({ $0.isLowercase || $0.isNumber || $0 == "-" }) || !(environment.name.first?.isLetter ?? false) {
                problems.append("\(at).name '\(environment.name)' must start with a letter and hold only a-z, 0-9 and '-'")
            } else if !names.insert(environment.name).inserted {
                problems.append("\(at).name '\(environment.name)' appears twice")
            }
            if environment.inventory.hasPrefix("postgres://") || environment.inventory.hasPrefix("postgresql://") {
                // The URL's own rules are checked where it is opened (check-config does that
                // too); the file's rules here: no password in the YAML.
                let authority = environment.inventory.split(separator: "/", maxSplits: 3).dropFirst().first ?? ""
                if let atSign = authority.firstIndex(of: "@"), authority[..<atSign].contains(":") {
                    problems.append("\(at).inventory carries a password; remove it and set inventory_password_file or inventory_password_credential")
                }
                if environment.inventoryPasswordFile != nil && environment.inventoryPasswordCredential != nil {
                    problems.append("\(at): give inventory_password_file or inventory_password_credential, not both")
                }
                if let file = environment.inventoryPasswordFile, !FileManager.default.isReadableFile(atPath: file) {
                    problems.append("\(at).inventory_password_file: cannot read '\(file)'")
                }
            } else if !environment.inventory.hasPrefix("sqlite:") {
                problems.append("\(at).inventory '\(environment.inventory)' is neither sqlite:PATH nor postgres://USER@HOST[:PORT]/DB")
            } else {
                if environment.inventoryPasswordFile != nil || environment.inventoryPasswordCredential != nil {
                    problems.append("\(at): inventory_password_file and inventory_password_credential are for postgres:// inventories only")
                }
                let path = String(environment.inventory.dropFirst("sqlite:".count)).replacingOccurrences(of: "//", with: "/", options: .anchored)
                if !FileManager.default.fileExists(atPath: path) {
                    problems.append("\(at).inventory: no file at '\(path)'")
                }
            }
            if let instance = environment.instanceID, !instances.insert(instance).inserted {
                problems.append("\(at).instance_id '\(instance)' is used twice")
            }
        }
        if !["gateway", "all-workers"].contains(supervisor.readyWhen) {
            problems.append("supervisor.ready_when '\(supervisor.readyWhen)' is not gateway or all-workers")
        }
        if supervisor.intensity < 1 { problems.append("supervisor.intensity must be at least 1") }
        if supervisor.restartMaxDelay < supervisor.restartInitialDelay {
            problems.append("supervisor.restart_max_delay is below restart_initial_delay")
        }
        if supervisor.childWatchdog < .seconds(1) { problems.append("supervisor.child_watchdog must be at least 1s") }
        // Handed to every child as its log variables: the children's own rules.
        if let level = supervisor.logLevel, let problem = CommonSettings.logLevel.problem(with: level, from: .file(path: "supervisor.log_level")) {
            problems.append(problem)
        }
        if let format = supervisor.logFormat, let problem = CommonSettings.logFormat.problem(with: format, from: .file(path: "supervisor.log_format")) {
            problems.append(problem)
        }
        return problems
    }
}

/// Reads typed values out of YAML nodes and collects what is wrong with them.
private struct Reader {
    var problems: [String] = []

    mutating func keys(_ node: Node, allowed: Set<String>, at path: String) {
        guard case .mapping(let mapping) = node else {
            problems.append("\(path.isEmpty ? "the file" : path): expected a mapping")
            return
        }
        for key in mapping.keys {
            guard let name = key.string else { continue }
            if !allowed.contains(name) {
                let hint = allowed.min { distance($0, name) < distance($1, name) }.map { " (did you mean \($0)?)" } ?? ""
                problems.append("\(path.isEmpty ? "" : path + ".")\(name): unknown key\(hint)")
            }
        }
    }

    mutating func string(_ node: Node, _ key: String, at path: String, required: Bool = false) -> String? {
        guard let value = node[key] else {
            if required { problems.append("\(path).\(key): missing") }
            return nil
        }
        guard case .scalar(let scalar) = value else {
            problems.append("\(path).\(key): expected a string")
            return nil
        }
        return scalar.string
    }

    /// Reads every setting of `settings` that `node` has, checked by the setting's own rule.
    mutating func settings(_ settings: [any AnySetting], from node: Node, at path: String, into values: inout SettingValues) {
        for setting in settings {
            guard let text = string(node, setting.yamlKey, at: path) else { continue }
            if let problem = values.set(text, for: setting, at: "\(path).\(setting.yamlKey)") { problems.append(problem) }
        }
    }

    mutating func strings(_ node: Node, _ key: String, at path: String) -> [String]? {
        guard let value = node[key] else { return nil }
        guard case .sequence(let list) = value else {
            problems.append("\(path).\(key): expected a list of strings")
            return nil
        }
        return list.compactMap(\.string)
    }

    mutating func int(_ node: Node, _ key: String, at path: String) -> Int? {
        guard let text = string(node, key, at: path) else { return nil }
        guard let value = Int(text) else {
            problems.append("\(path).\(key): '\(text)' is not a whole number")
            return nil
        }
        return value
    }

    mutating func bool(_ node: Node, _ key: String, at path: String) -> Bool? {
        guard let text = string(node, key, at: path) else { return nil }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            problems.append("\(path).\(key): '\(text)' is not true or false")
            return nil
        }
    }

    mutating func duration(_ node: Node, _ key: String, at path: String) -> Duration? {
        guard let text = string(node, key, at: path) else { return nil }
        guard let duration = DurationText.parse(text) else {
            problems.append("\(path).\(key): '\(text)' is not \(DurationText.expected)")
            return nil
        }
        return duration
    }

    /// Edit distance, for "did you mean".
    private func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }
}
