import ArgumentParser
import Foundation
import GatewayJournal
import Logging
import Settings
import LogOutput
import SystemdSupport
import Telemetry

/// Logging flags of the long-running roles.
struct LogOptions: ParsableArguments {
    @Option(name: .customLong(CommonSettings.logLevel.flag), help: CommonSettings.logLevel.argumentHelp)
    var logLevel: String?

    @Option(name: .customLong(CommonSettings.logFormat.flag), help: CommonSettings.logFormat.argumentHelp)
    var logFormat: String?

    func validate() throws {
        try checkCommandLine([(CommonSettings.logLevel, logLevel), (CommonSettings.logFormat, logFormat)])
    }

    func level() throws -> Logger.Level {
        let text = try CommonSettings.logLevel.value(logLevel)
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ValidationError("log level '\(text)' is not one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return level
    }

    /// nil: journald.
    func format() throws -> StderrLogHandler.Format? {
        guard let text = try CommonSettings.logFormat.value(logFormat) else {
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

/// The admin socket of the client commands: the gateway's own setting.
struct AdminSocketOption: ParsableArguments {
    @Option(name: .customLong(GatewaySettings.adminSocket.flag), help: GatewaySettings.adminSocket.argumentHelp)
    var adminSocket: String?

    var path: String {
        get throws { try GatewaySettings.adminSocket.value(adminSocket) }
    }
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
    @Option(name: .customLong(CommonSettings.migrations.flag), help: CommonSettings.migrations.argumentHelp)
    var migrations: String?

    func load() throws -> MigrationSet {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return try MigrationSet.locate(explicit: try CommonSettings.migrations.value(migrations), executable: executable)
    }
}

/// Prometheus metrics at `http://HOST:PORT/metrics`, off unless an address is given.
enum MetricsExport {
    /// The registry to record into and the server that exports it; nil when metrics are off.
    static func make(address: String?, logger: Logger) throws -> (registry: MetricsRegistry, server: MetricsServer)? {
        guard let address else { return nil }
        let registry = MetricsRegistry()
        return (registry, try MetricsServer(address: address, registry: registry, logger: logger))
    }
}

extension AnySetting {
    /// The setting's help for `--help`: its summary, variable and default, and its value's name.
    var argumentHelp: ArgumentHelp { ArgumentHelp(help, valueName: valueName) }
}

/// A usage error for the first text given on the command line that its setting refuses.
func checkCommandLine(_ given: [(setting: any AnySetting, text: String?)]) throws {
    for (setting, text) in given {
        if let text, let problem = setting.problem(with: text, from: .commandLine) { throw ValidationError(problem) }
    }
}
