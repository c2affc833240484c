import Foundation
import Settings
import Supervision
import Testing

/// The YAML, the children's command lines and the settings' defaults come from one definition
/// per setting; these prove the three agree.
@Suite("One home per setting")
struct SettingsAgreementTests {
    /// A valid text for `setting` other than its default.
    func otherValue(for setting: any AnySetting) -> String? {
        ["/tmp/\(setting.flag)", "127.0.0.1:1999", "normal", "9s", "2", "77", "5000"].first {
            $0 != setting.defaultArgument && setting.problem(with: $0, from: .commandLine) == nil
        }
    }

    func withInventory<Result>(_ body: (String) throws -> Result) throws -> Result {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("settings-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inventory = directory + "/production.sqlite3"
        try Data().write(to: URL(fileURLWithPath: inventory))
        return try body(inventory)
    }

    /// The value that follows `option` in `arguments`, if it is there.
    func value(of option: String, in arguments: [String]) -> String? {
        guard let index = arguments.firstIndex(of: option), index + 1 < arguments.count else { return nil }
        return arguments[index + 1]
    }

    @Test("every gateway and worker setting the file may set reaches the child as its flag and value, and every flag the supervisor passes is a setting of that command")
    func fileValuesBecomeFlags() throws {
        try withInventory { inventory in
            var gatewayValues: [String: String] = [:], workerValues: [String: String] = [:]
            for setting in GatewaySettings.configurable {
                let text: String = try #require(otherValue(for: setting), "\(setting.option)")
                gatewayValues[setting.flag] = text
            }
            for setting in WorkerSettings.configurable where setting.flag != WorkerSettings.inventory.flag {
                let text: String = try #require(otherValue(for: setting), "\(setting.option)")
                workerValues[setting.flag] = text
            }
            // A PostgreSQL inventory, so its password file is allowed; the file must exist.
            workerValues[WorkerSettings.inventory.flag] = "postgres://vps@db.internal/platform"
            workerValues[WorkerSettings.inventoryPasswordFile.flag] = inventory
            let yaml = "gateway:\n" + GatewaySettings.configurable.map { "  \($0.yamlKey): \"\(gatewayValues[$0.flag]!)\"\n" }.joined()
                + "environments:\n  - name: production\n"
                + WorkerSettings.configurable.map { "    \($0.yamlKey): \"\(workerValues[$0.flag]!)\"\n" }.joined()
            let (parsed, problems) = SupervisorConfiguration.parse(yaml, source: "all.yaml")
            #expect(problems.isEmpty, "\(problems)")
            let configuration = try #require(parsed)
            // No GATEWAY_API_SECRET: that would win over the file's api_secret_file.
            let specs = try configuration.childSpecs(executable: "/bin/vps-gateway", variables: [:], hostName: "node1")
            let gateway = try #require(specs.first { $0.role == .gateway }).arguments
            let worker = try #require(specs.first { $0.role == .worker(environment: "production") }).arguments
            for setting in GatewaySettings.configurable {
                #expect(value(of: setting.option, in: gateway) == gatewayValues[setting.flag], "\(setting.option) in \(gateway)")
            }
            for setting in WorkerSettings.configurable {
                #expect(value(of: setting.option, in: worker) == workerValues[setting.flag], "\(setting.option) in \(worker)")
            }
            let gatewayFlags = Set(GatewaySettings.all.map(\.option)), workerFlags = Set(WorkerSettings.all.map(\.option))
            #expect(gateway.filter { $0.hasPrefix("--") }.allSatisfy(gatewayFlags.contains), "\(gateway)")
            #expect(worker.filter { $0.hasPrefix("--") }.allSatisfy(workerFlags.contains), "\(worker)")
        }
    }

    @Test("a file that sets nothing hands the gateway the settings' own defaults for the paths it owns, and the file's accessors read the same defaults")
    func unsetMeansTheSettingsDefault() throws {
        try withInventory { inventory in
            let (parsed, problems) = SupervisorConfiguration.parse("environments:\n  - name: production\n    inventory: sqlite:\(inventory)\n", source: "min.yaml")
            #expect(problems.isEmpty)
            let configuration = try #require(parsed)
            let gateway = try configuration.childSpecs(executable: "/bin/vps-gateway", variables: ["GATEWAY_API_SECRET": "s"], hostName: "node1")[0].arguments
            for setting in [GatewaySettings.listen, GatewaySettings.adminSocket, GatewaySettings.journal, GatewaySettings.journalSync,
                            GatewaySettings.dhcpLeases, GatewaySettings.dhcpHosts] {
                #expect(value(of: setting.option, in: gateway) == setting.defaultValue, "\(setting.option)")
            }
            #expect(configuration.gateway.listen == GatewaySettings.listen.defaultValue)
            #expect(configuration.gateway.dhcpLeases == GatewaySettings.dhcpLeases.defaultValue)
            #expect(configuration.gateway.dhcpHosts == GatewaySettings.dhcpHosts.defaultValue)
            // Tuning the file does not mention stays off the command line: the child's default is the same one.
            #expect(value(of: GatewaySettings.heartbeatInterval.option, in: gateway) == nil)
        }
    }

    @Test("a value the setting's rule refuses is named by its YAML path, with the text and what was expected")
    func fileValuesFollowTheSettingsRules() {
        let (configuration, problems) = SupervisorConfiguration.parse("""
            gateway:
              max_attempts: "0"
              heartbeat_interval: soon
            environments:
              - name: production
                inventory: sqlite:/nonexistent.sqlite3
                max_concurrent: "-1"
            """, source: "bad.yaml")
        #expect(configuration == nil)
        for fragment in ["gateway.max_attempts '0' must be 1 to 100", "gateway.heartbeat_interval 'soon' is not a duration",
                         "environments[0].max_concurrent '-1' must be at least 1"] {
            #expect(problems.contains { $0.contains(fragment) }, "no problem says \(fragment): \(problems)")
        }
    }

    @Test("a setting is read from its flag, else its variable (empty counts as unset), else its default; a bad variable is named")
    func resolutionOrder() throws {
        let setting = GatewaySettings.reconcileInterval
        let variable = try #require(setting.variable)
        #expect(try setting.value(nil, environment: [:]) == setting.defaultValue)
        #expect(try setting.value(nil, environment: [variable: ""]) == setting.defaultValue)
        #expect(try setting.value(nil, environment: [variable: "5s"]) == .seconds(5))
        #expect(try setting.value("2s", environment: [variable: "5s"]) == .seconds(2))
        #expect(throws: SettingError.self) { try setting.value(nil, environment: [variable: "often"]) }
        do {
            _ = try setting.value(nil, environment: [variable: "often"])
        } catch {
            #expect(error.message.contains(variable) && error.message.contains("'often'"))
        }
        #expect(GatewaySettings.dnsmasqPidFile.defaultArgument == nil)
        #expect(try GatewaySettings.dnsmasqPidFile.value(nil, environment: [:]) == nil)
    }

    @Test("every setting's flag is unique within its command, and a duration default reads back as itself")
    func definitionsAreConsistent() {
        for catalog in [GatewaySettings.all, WorkerSettings.all] {
            let flags = catalog.map(\.flag)
            #expect(Set(flags).count == flags.count, "\(flags)")
            for setting in catalog {
                if let text = setting.defaultArgument { #expect(setting.problem(with: text, from: .commandLine) == nil, "\(setting.option) default '\(text)'") }
            }
        }
        for duration: Duration in [.seconds(7 * 86_400), .seconds(90), .milliseconds(1500), .seconds(600), .zero] {
            #expect(Duration(settingText: duration.settingText) == duration, "\(duration.settingText)")
        }
    }
}
