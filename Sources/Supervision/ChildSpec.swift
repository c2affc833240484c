import Foundation
import Settings
import TextFormats

/// One child the supervisor runs: what to execute and with which environment.
public struct ChildSpec: Sendable, Equatable {
    public enum Role: Sendable, Equatable {
        case gateway
        case worker(environment: String)
    }

    /// `gateway` or `worker-<environment>`: the name in logs, STATUS and the notify socket.
    public var name: String
    public var role: Role
    public var executable: String
    public var arguments: [String]
    /// The whole environment the child gets (nothing else is inherited).
    public var environment: [String: String]
    public var notifySocket: String
}

extension SupervisorConfiguration {
    /// Where the supervisor writes the configured environments for the gateway.
    public var environmentsFile: String { "\(supervisor.notifyDirectory)/environments" }

    /// The children this configuration asks for, gateway first. `variables` are the
    /// supervisor's own environment (seed overrides, systemd's credentials and journal).
    public func childSpecs(executable: String, variables: [String: String], hostName: String) throws -> [ChildSpec] {
        var listen = gateway.listen
        if let port = variables["GATEWAY_GRPC_PORT"] {
            guard let number = Int(port), (1...65535).contains(number) else {
                throw SupervisorError(code: .invalidConfiguration, message: "GATEWAY_GRPC_PORT '\(port)' is not a port number")
            }
            listen = String(listen[..<(listen.lastIndex(of: ":") ?? listen.endIndex)]) + ":\(number)"
        }
        // What every child keeps of the supervisor's environment; systemd's notify and
        // watchdog variables are replaced by the supervisor's own.
        var base: [String: String] = ["PATH": variables["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"]
        for key in ["LANG", "TZ", "JOURNAL_STREAM", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY", "STATE_DIRECTORY"] {
            if let value = variables[key] { base[key] = value }
        }
        // A child that crashes (or that the child watchdog aborts) prints its backtrace to
        // stderr, the journal, without waiting for a terminal; the operator's own setting wins.
        base["SWIFT_BACKTRACE"] = variables["SWIFT_BACKTRACE"] ?? "enable=yes,interactive=no,symbolicate=fast"
        if let level = supervisor.logLevel, let variable = CommonSettings.logLevel.variable { base[variable] = level }
        if let format = supervisor.logFormat, let variable = CommonSettings.logFormat.variable { base[variable] = format }
        base["WATCHDOG_USEC"] = "\(supervisor.childWatchdog.wholeMicroseconds)"

        // The secret: the environment wins (seed), else a systemd credential, else a file.
        var secretArguments: [String] = []
        var gatewaySecret: [String: String] = [:], workerSecret: [String: String] = [:]
        if let secret = variables["GATEWAY_API_SECRET"] {
            gatewaySecret["GATEWAY_API_SECRET"] = secret
            workerSecret["VPS_GATEWAY_API_SECRET"] = secret
        } else if let credential = gateway.apiSecretCredential {
            guard let directory = variables["CREDENTIALS_DIRECTORY"] else {
                throw SupervisorError(code: .invalidConfiguration, message: "gateway.api_secret_credential '\(credential)' needs $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)")
            }
            secretArguments = GatewaySettings.apiSecretFile.arguments("\(directory)/\(credential)")
        } else if let file = gateway.apiSecretFile {
            secretArguments = GatewaySettings.apiSecretFile.arguments(file)
        } else {
            throw SupervisorError(code: .invalidConfiguration, message: "no API secret: set gateway.api_secret_file or api_secret_credential, or GATEWAY_API_SECRET")
        }

        // Each child stops within its own grace plus 3 s; half of the supervisor's keeps
        // that inside the wait before its SIGKILL.
        let childGrace = max(supervisor.shutdownGrace / 2, .seconds(1))
        // The file's settings in their flags; the paths the gateway owns are always spelled
        // out, so `ps` and the journal show them. The environments this node serves come in
        // a file the supervisor rewrites on reload (then SIGHUPs the gateway), so the
        // gateway's arguments stay the same.
        var gatewaySettings = gateway.settings
        gatewaySettings[GatewaySettings.listen] = listen
        let gatewayArguments = ["gateway"]
            + gatewaySettings.arguments(
                of: GatewaySettings.configurable.filter { $0.flag != GatewaySettings.apiSecretFile.flag },
                always: [GatewaySettings.listen, GatewaySettings.adminSocket, GatewaySettings.journal, GatewaySettings.journalSync,
                         GatewaySettings.dhcpLeases, GatewaySettings.dhcpHosts])
            + GatewaySettings.shutdownGrace.arguments(childGrace)
            + GatewaySettings.environmentsFile.arguments(environmentsFile)
        var specs = [ChildSpec(
            name: "gateway", role: .gateway, executable: executable,
            arguments: gatewayArguments + secretArguments + gateway.extraArguments,
            environment: base.merging(gatewaySecret) { $1 }.merging(["NOTIFY_SOCKET": "\(supervisor.notifyDirectory)/gateway.sock"]) { $1 },
            notifySocket: "\(supervisor.notifyDirectory)/gateway.sock"
        )]
        let host = String(listen[..<(listen.lastIndex(of: ":") ?? listen.endIndex)])
        let dialHost = ["0.0.0.0", "", "[::]", "::"].contains(host) ? "127.0.0.1" : host
        let url = "http://\(dialHost):\(listen.split(separator: ":").last ?? "1537")"
        for environment in environments {
            let name = "worker-\(environment.name)"
            var settings = environment.settings
            if settings[WorkerSettings.instanceID] == nil { settings[WorkerSettings.instanceID] = "\(hostName)-\(environment.name)" }
            if settings[WorkerSettings.inventoryPasswordFile] == nil, let credential = environment.inventoryPasswordCredential {
                guard let directory = variables["CREDENTIALS_DIRECTORY"] else {
                    throw SupervisorError(code: .invalidConfiguration, message: "environments \(environment.name): inventory_password_credential '\(credential)' needs $CREDENTIALS_DIRECTORY (LoadCredential= in the unit)")
                }
                settings[WorkerSettings.inventoryPasswordFile] = "\(directory)/\(credential)"
            }
            let socket = "\(supervisor.notifyDirectory)/\(name).sock"
            let arguments = ["worker"] + WorkerSettings.environment.arguments(environment.name)
                + settings.arguments(of: WorkerSettings.configurable)
                + WorkerSettings.gatewayURL.arguments(url) + WorkerSettings.shutdownGrace.arguments(childGrace)
            specs.append(ChildSpec(
                name: name, role: .worker(environment: environment.name), executable: executable,
                arguments: arguments + secretArguments + environment.extraArguments,
                environment: base.merging(workerSecret) { $1 }.merging(["NOTIFY_SOCKET": socket]) { $1 },
                notifySocket: socket
            ))
        }
        return specs
    }
}
