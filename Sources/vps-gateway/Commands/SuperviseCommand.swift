import ArgumentParser
import Foundation
import LeaseInventory
import Logging
import Settings
import Supervision
import Telemetry
import TextFormats

struct SuperviseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "supervise",
        abstract: "Run the gateway and one worker per environment as supervised children (the systemd unit's main process).",
        discussion: """
            Reads a YAML configuration (see examples/dev.yaml and examples/production.yaml), starts \
            the gateway and then one worker per environment, each with a clean environment and a \
            notify socket of the supervisor's own, and restarts them with exponential backoff \
            (an intensity limit gives a crash-looping child up). Reports READY, STATUS, \
            WATCHDOG, RELOADING and STOPPING to systemd. SIGHUP re-reads the configuration and \
            adds or removes workers without touching the others; SIGTERM/SIGINT stop workers, \
            then the gateway.

            Environment: GATEWAY_GRPC_PORT and GATEWAY_API_SECRET override the file; systemd's \
            $CREDENTIALS_DIRECTORY serves gateway.api_secret_credential; $NOTIFY_SOCKET and \
            $WATCHDOG_USEC are systemd's and are not passed on to the children.

            Examples:
              vps-gateway supervise --config /etc/vps-gateway/vps-gateway.yaml
              GATEWAY_API_SECRET=s3cret vps-gateway supervise --config examples/dev.yaml

            SIGTERM/SIGINT stop the workers, then the gateway, each within supervisor.shutdown_grace \
            (then SIGKILL); a second SIGTERM/SIGINT kills every child at once.

            Exit codes: 0 after SIGTERM/SIGINT; 73 another supervisor runs on the same \
            notify_directory (its pid is named; nothing of it is touched); 75 the gateway was \
            given up after its restart intensity, or a worker and supervisor.escalate is set \
            (systemd's Restart= takes over); 78 the configuration is unusable.
            """
    )

    @Option(help: ArgumentHelp("The YAML configuration.", valueName: "path"))
    var config: String

    @OptionGroup var logging: LogOptions

    @Option(name: .customLong(CommonSettings.supervisorMetricsAddress.flag), help: CommonSettings.supervisorMetricsAddress.argumentHelp)
    var metricsAddress: String?

    func run() async throws {
        let logger = try logging.makeLogger(label: "supervisor", identifier: "vps-gateway-supervisor")
        let supervisor: Supervisor
        let exported: (registry: MetricsRegistry, server: MetricsServer)?
        do {
            // The flag, else the file's supervisor.metrics_address, else the variable.
            let configured = metricsAddress ?? (try? SupervisorConfiguration.load(path: config))?.supervisor.metricsAddress
            exported = try MetricsExport.make(address: try CommonSettings.supervisorMetricsAddress.value(configured), logger: logger)
            supervisor = try Supervisor(options: .init(
                configurationPath: config,
                executable: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0],
                variables: ProcessInfo.processInfo.environment,
                hostName: Environment.hostName
            ), logger: logger, metrics: exported?.registry)
        } catch let error as SupervisorError {
            throw fail(error.message, Exit.config)
        } catch {
            throw fail("\(error)", Exit.config)
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                if let server = exported?.server { group.addTask { try await server.run() } }
                try await supervisor.run()
                group.cancelAll()
            }
        } catch let error as SupervisorError {
            switch error.code {
            case .childGaveUp: throw fail(error.message, Exit.tempFail)
            case .alreadyRunning: throw fail(error.message, Exit.alreadyRunning)
            default: throw fail(error.message, Exit.software)
            }
        }
    }
}

struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a supervisor configuration file and name every problem in it.",
        discussion: """
            Checks the file's shape (unknown keys, wrong types), its values (addresses, \
            durations, names, that each inventory file exists) and that the API secret is \
            reachable (GATEWAY_API_SECRET, the file, or $CREDENTIALS_DIRECTORY for a credential). \
            A PostgreSQL inventory is connected to: a wrong password, an unknown database or \
            missing tables are problems; a database that cannot be reached now is only a \
            warning (the workers start and answer `unavailable` until it is back).

            A usable file prints each child's command line as the supervisor will start it: \
            every setting the file gives, spelled as the child's own flag.

            Examples:
              vps-gateway check-config /etc/vps-gateway/vps-gateway.yaml
              vps-gateway check-config --json examples/dev.yaml | jq .problems

            Exit codes: 0 usable; 78 problems found (each named on its own line, or in \
            "problems" with --json).
            """
    )

    @Argument(help: ArgumentHelp("The YAML configuration.", valueName: "path"))
    var path: String

    @Flag(help: "Print one JSON object: path, usable, children, command_lines, problems, warnings.")
    var json = false

    struct Report: Encodable {
        var path: String
        var usable: Bool
        var children: [String]
        /// Each child's arguments after the executable, as the supervisor will start it.
        var commandLines: [String: [String]]
        var problems: [String]
        var warnings: [String]

        enum CodingKeys: String, CodingKey {
            case path, usable, children, problems, warnings
            case commandLines = "command_lines"
        }
    }

    func run() async throws {
        var report = Report(path: path, usable: false, children: [], commandLines: [:], problems: [], warnings: [])
        if let data = FileManager.default.contents(atPath: path) {
            let (configuration, problems) = SupervisorConfiguration.parse(String(decoding: data, as: UTF8.self), source: path)
            report.problems = problems
            if let configuration {
                do {
                    let specs = try configuration.childSpecs(
                        executable: "vps-gateway", variables: ProcessInfo.processInfo.environment, hostName: Environment.hostName
                    )
                    report.children = specs.map(\.name)
                    for spec in specs { report.commandLines[spec.name] = spec.arguments }
                    for spec in specs {
                        guard case .worker(let environment) = spec.role else { continue }
                        await checkInventory(of: environment, arguments: spec.arguments, into: &report)
                    }
                } catch let error as SupervisorError {
                    report.problems.append(error.message)
                }
            }
        } else {
            report.problems = ["cannot read the configuration file '\(path)'"]
        }
        report.usable = report.problems.isEmpty
        if json {
            try printJSON(report)
        } else if report.usable {
            print("\(path): usable; children: \(report.children.joined(separator: ", "))")
            for child in report.children {
                print("  \(child): vps-gateway \((report.commandLines[child] ?? []).map { Printable.escaped($0) }.joined(separator: " "))")
            }
            for warning in report.warnings { print("warning: \(warning)") }
        } else {
            printError("vps-gateway: '\(path)' has \(report.problems.count) problem(s):\n  - " + report.problems.joined(separator: "\n  - "))
        }
        if !report.usable { throw Exit.config }
    }

    /// Opens a worker's PostgreSQL inventory the way the worker will (same URL, same password
    /// file): unusable is a problem, unreachable a warning.
    private func checkInventory(of environment: String, arguments: [String], into report: inout Report) async {
        func value(_ flag: String) -> String? {
            arguments.firstIndex(of: flag).flatMap { arguments.index(after: $0) < arguments.endIndex ? arguments[arguments.index(after: $0)] : nil }
        }
        guard let url = value(WorkerSettings.inventory.option) else { return }
        do {
            guard case .postgres = try InventoryLocation(url: url) else { return }
        } catch {
            report.problems.append("environments \(environment): \(error)")
            return
        }
        let logger = Logger(label: "check-config") { _ in SwiftLogNoOpLogHandler() }
        do {
            _ = try await InventoryOpener.open(url: url, password: try InventoryPassword.load(file: value(WorkerSettings.inventoryPasswordFile.option), for: url), requireReachable: true, logger: logger)
        } catch let error as InventoryError where error.code == .unavailable {
            report.warnings.append("environments \(environment): \(error.message)")
        } catch let error as InventoryError {
            report.problems.append("environments \(environment): \(error.message)")
        } catch {
            report.problems.append("environments \(environment): \(error)")
        }
    }
}
