import ArgumentParser
import Foundation
import GatewayJournal
import Logging
import LogOutput
import SystemdSupport
import Telemetry

/// Logging flags of the long-running roles.
struct LogOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Lowest level logged: trace, debug, info, notice, warning, error, critical. Env: VPS_GATEWAY_LOG_LEVEL.",
        valueName: "level"
    ))
    var logLevel: String?

    @Option(help: ArgumentHelp("Where and how to log: text or json lines on stderr, or journal (native journald fields). Default: journal when stderr is journald's stream, else text. Env: VPS_GATEWAY_LOG_FORMAT.", valueName: "format"))
    var logFormat: String?

    func validate() throws {
        _ = try level()
        _ = try format()
    }

    func level() throws -> Logger.Level {
        let text = logLevel ?? Environment.value("VPS_GATEWAY_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("log level '\(text)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return level
    }

    /// nil: journald.
    func format() throws -> StderrLogHandler.Format? {
        guard let text = logFormat ?? Environment.value("VPS_GATEWAY_LOG_FORMAT") else {
            return JournaldLogHandler.stderrIsJournal ? nil : .text
        }
        if text.lowercased() == "journal" { return nil }
        guard let format = StderrLogHandler.Format(rawValue: text.lowercased()) else {
            throw ValidationError("log format '\(text)' is not one of text, json, journal")
        }
        return format
    }

    /// Installs the backend and returns the role's logger; `identifier` is the journal's
    /// `SYSLOG_IDENTIFIER` (which tells the gateway, each worker and the supervisor apart).
    func makeLogger(label: String, identifier: String) throws -> Logger {
        let level = try level(), format = try format()
        LoggingSystem.bootstrap { label in
            if let format { return StderrLogHandler(label: label, format: format, level: level) }
            return JournaldLogHandler(identifier: identifier, level: level)
        }
        return Logger(label: label)
    }
}

/// The admin socket of the client commands.
struct AdminSocketOption: ParsableArguments {
    static let defaultPath = "/run/vps-gateway/admin.sock"

    @Option(help: ArgumentHelp(
        "The gateway's admin socket. Env: GATEWAY_ADMIN_SOCKET. Default: \(defaultPath).",
        valueName: "path"
    ))
    var adminSocket: String?

    var path: String { adminSocket ?? Environment.value("GATEWAY_ADMIN_SOCKET") ?? Self.defaultPath }
}

/// Where a call goes and how long it may take; shared by `call`, `lookup` and `bench`.
struct CallTargetOptions: ParsableArguments {
    @Option(name: [.customLong("env"), .customLong("environment")], help: ArgumentHelp("Ask only this environment (default: all).", valueName: "name"))
    var environment: String = ""

    @Option(name: .customLong("instance"), help: ArgumentHelp("Ask only this instance id (default: any).", valueName: "id"))
    var instanceID: String = ""
}

extension Data {
    init?(hex: String) {
        let digits = hex.filter { !$0.isWhitespace }
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = digits.startIndex
        while index < digits.endIndex {
            let next = digits.index(index, offsetBy: 2)
            guard let byte = UInt8(digits[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes)
    }

    var hex: String { map { String(format: "%02x", $0) }.joined() }
}

/// Prints an `Encodable` value as one line of JSON on standard output.
func printJSON(_ value: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

/// Where the journal's migrations are (see `MigrationSet.locate`).
struct MigrationsOption: ParsableArguments {
    @Option(help: ArgumentHelp(
        "The journal's migrations directory. Env: VPS_GATEWAY_MIGRATIONS. Default: ../share/vps-gateway/migrations next to the binary, else migrations/ of the source tree.",
        valueName: "dir"
    ))
    var migrations: String?

    func load() throws -> MigrationSet {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return try MigrationSet.locate(explicit: migrations ?? Environment.value("VPS_GATEWAY_MIGRATIONS"), executable: executable)
    }
}

/// `--metrics-address HOST:PORT`: Prometheus metrics at `/metrics`, off by default.
struct MetricsOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464). Default: off. Env: VPS_GATEWAY_METRICS_ADDRESS for the gateway, VPS_WORKER_METRICS_ADDRESS for a worker, VPS_SUPERVISOR_METRICS_ADDRESS for the supervisor.", valueName: "host:port"))
    var metricsAddress: String?

    /// The registry to record into and the server that exports it; nil when metrics are off.
    func make(variable: String, logger: Logger) throws -> (registry: MetricsRegistry, server: MetricsServer)? {
        guard let address = metricsAddress ?? Environment.value(variable) else { return nil }
        let registry = MetricsRegistry()
        return (registry, try MetricsServer(address: address, registry: registry, logger: logger))
    }
}
