import Foundation
import Supervision
import Testing

@Suite("Supervisor configuration")
struct SupervisorConfigurationTests {
    /// A temp directory with an inventory file, removed at the end.
    func withInventory(_ body: (String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("supervision-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let inventory = directory + "/production.sqlite3"
        try Data().write(to: URL(fileURLWithPath: inventory))
        try body(inventory)
    }

    @Test("a minimal file takes the documented defaults")
    func defaults() throws {
        try withInventory { inventory in
            let (configuration, problems) = SupervisorConfiguration.parse("""
                environments:
                  - name: production
                    inventory: sqlite:\(inventory)
                """, source: "test.yaml")
            #expect(problems.isEmpty)
            let parsed = try #require(configuration)
            #expect(parsed.gateway.listen == "0.0.0.0:1537")
            #expect(parsed.gateway.dhcpLeases == "/var/lib/misc/dnsmasq.leases")
            #expect(parsed.gateway.dhcpHosts == "/var/lib/vps-gateway/vps-hosts")
            #expect(parsed.supervisor.intensity == 5)
            #expect(parsed.supervisor.intensityPeriod == .seconds(60))
            #expect(parsed.supervisor.restartInitialDelay == .milliseconds(100))
            #expect(parsed.supervisor.restartMaxDelay == .seconds(30))
        }
    }

    @Test("every problem in a file is named, with where it is and what was expected")
    func everyProblemIsNamed() {
        let (configuration, problems) = SupervisorConfiguration.parse("""
            gateway:
              listen: nowhere
              journal_sync: sometimes
              colour: blue
            environments:
              - name: Production
                inventory: postgres://vps:hunter2@db/inventory
              - inventory: sqlite:/nonexistent/beta.sqlite3
                inventory_password_file: /etc/beta-password
            supervisor:
              intensity: many
              child_watchdog: 10 parsecs
              ready_when: never
            """, source: "bad.yaml")
        #expect(configuration == nil)
        let expected = [
            "gateway.colour", "gateway.listen 'nowhere' is not HOST:PORT", "journal_sync 'sometimes'",
            "environments[0].name 'Production'", "environments[0].inventory carries a password",
            "environments[1]: inventory_password_file and inventory_password_credential are for postgres:// inventories only",
            "environments[1]", "name", "no file at '/nonexistent/beta.sqlite3'",
            "supervisor.intensity", "supervisor.child_watchdog", "ready_when 'never'",
        ]
        for fragment in expected {
            #expect(problems.contains { $0.contains(fragment) }, "no problem mentions \(fragment): \(problems)")
        }
    }

    @Test("text that is not YAML, or not a mapping, is refused with a reason")
    func notYAML() {
        #expect(SupervisorConfiguration.parse("gateway: [unclosed", source: "x").1.first?.contains("not valid YAML") == true)
        #expect(SupervisorConfiguration.parse("- a\n- b\n", source: "x").1.first?.contains("must be a YAML mapping") == true)
    }

    @Test("children get a clean environment: no systemd notify or watchdog variables, a notify socket of their own, the port override")
    func childSpecsAreClean() throws {
        try withInventory { inventory in
            let (configuration, _) = SupervisorConfiguration.parse("""
                gateway:
                  listen: 0.0.0.0:1537
                  api_secret_credential: api-secret
                environments:
                  - name: production
                    inventory: sqlite:\(inventory)
                supervisor:
                  notify_directory: /run/test/notify
                  child_watchdog: 3s
                """, source: "test.yaml")
            let parsed = try #require(configuration)
            let specs = try parsed.childSpecs(executable: "/usr/bin/vps-gateway", variables: [
                "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1",
                "CREDENTIALS_DIRECTORY": "/run/credentials/vps-gateway.service", "GATEWAY_GRPC_PORT": "2537",
                "HOME": "/root", "PATH": "/usr/bin",
            ], hostName: "node7")
            #expect(specs.map(\.name) == ["gateway", "worker-production"])
            for spec in specs {
                #expect(spec.environment["NOTIFY_SOCKET"] == "/run/test/notify/\(spec.name).sock")
                #expect(spec.environment["WATCHDOG_USEC"] == "3000000")
                #expect(spec.environment["WATCHDOG_PID"] == nil)
                #expect(spec.environment["HOME"] == nil)
                #expect(spec.arguments.contains("/run/credentials/vps-gateway.service/api-secret"))
            }
            #expect(specs[0].arguments.contains("0.0.0.0:2537"))
            #expect(specs[1].arguments.contains("http://127.0.0.1:2537"))
            #expect(specs[1].arguments.contains("node7-production"), "the default instance id is <host>-<environment>")
        }
    }

    @Test("a credential without CREDENTIALS_DIRECTORY, or no secret at all, is a configuration error")
    func secretMustBeReachable() throws {
        try withInventory { inventory in
            let (withCredential, _) = SupervisorConfiguration.parse("""
                gateway:
                  api_secret_credential: api-secret
                environments:
                  - name: production
                    inventory: sqlite:\(inventory)
                """, source: "test.yaml")
            #expect(throws: SupervisorError.self) {
                try withCredential?.childSpecs(executable: "vps-gateway", variables: [:], hostName: "node7")
            }
            let (withoutSecret, _) = SupervisorConfiguration.parse("environments: []", source: "test.yaml")
            #expect(throws: SupervisorError.self) {
                try withoutSecret?.childSpecs(executable: "vps-gateway", variables: [:], hostName: "node7")
            }
        }
    }

    @Test("a PostgreSQL inventory takes its password from a file or a credential, handed to the worker as --inventory-password-file")
    func postgresInventories() throws {
        let (configuration, problems) = SupervisorConfiguration.parse("""
            gateway:
              api_secret_file: /etc/vps-gateway/api-secret
            environments:
              - name: production
                inventory: postgres://vps_gateway@db.internal/platform?sslmode=require
                inventory_password_credential: inventory-password
              - name: beta
                inventory: postgresql://vps_gateway@db.internal/beta
                inventory_password_file: /dev/null
            """, source: "pg.yaml")
        #expect(problems.isEmpty, "\(problems)")
        let parsed = try #require(configuration)
        let specs = try parsed.childSpecs(executable: "vps-gateway", variables: ["CREDENTIALS_DIRECTORY": "/run/credentials/vps-gateway.service"], hostName: "node")
        let production = try #require(specs.first { $0.name == "worker-production" })
        #expect(production.arguments.contains("postgres://vps_gateway@db.internal/platform?sslmode=require"))
        let flag = try #require(production.arguments.firstIndex(of: "--inventory-password-file"))
        #expect(production.arguments[flag + 1] == "/run/credentials/vps-gateway.service/inventory-password")
        let beta = try #require(specs.first { $0.name == "worker-beta" })
        #expect(beta.arguments.contains("/dev/null"))
        #expect(throws: (any Error).self) {
            try parsed.childSpecs(executable: "vps-gateway", variables: [:], hostName: "node")
        }

        let (_, both) = SupervisorConfiguration.parse("""
            environments:
              - name: production
                inventory: postgres://vps_gateway@db/platform
                inventory_password_file: /dev/null
                inventory_password_credential: inventory-password
            """, source: "both.yaml")
        #expect(both.contains { $0.contains("not both") }, "\(both)")
    }
}
