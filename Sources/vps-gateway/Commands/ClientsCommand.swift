import ArgumentParser
import Foundation
import GatewayAdminClient
import GatewayProtocol
import SwiftProtobuf

struct ClientsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clients",
        abstract: "List the VPS-service instances connected to the gateway.",
        discussion: """
            Examples:
              vps-gateway clients
              vps-gateway clients --env production --json

            Exit codes: 0 listed (also when none is connected); 69 the admin socket is unreachable.
            """
    )

    @Option(name: [.customLong("env"), .customLong("environment")], help: ArgumentHelp("Only this environment.", valueName: "name"))
    var environment: String = ""

    @Flag(help: "Print {\"clients\": [...]} with the admin API's field names.")
    var json = false

    @OptionGroup var admin: AdminSocketOption

    func run() async throws {
        let environment = self.environment
        let clients = try await withAdmin(admin) { try await $0.listClients(environment: environment) }
        if json {
            try printJSON(["clients": clients.map(ClientJSON.init)])
            return
        }
        guard !clients.isEmpty else {
            print(environment.isEmpty ? "no clients connected" : "no clients of environment '\(environment)' connected")
            return
        }
        let now = Date()
        let rows = [["INSTANCE", "ENVIRONMENT", "NODE", "VERSION", "CONNECTED", "HEARTBEAT", "IN-FLIGHT", "METHODS", "REMOTE"]]
            + clients.map { client in
                [
                    client.instanceID, client.environment, client.node, client.version,
                    Self.age(client.connectedAt.date, now), client.hasLastHeartbeat ? Self.age(client.lastHeartbeat.date, now) : "-",
                    "\(client.inFlight)", client.methods.joined(separator: ","), client.remoteAddress,
                ]
            }
        printTable(rows)
    }

    static func age(_ date: Date, _ now: Date) -> String {
        let seconds = Int(now.timeIntervalSince(date))
        switch seconds {
        case ..<60: return "\(max(seconds, 0))s ago"
        case ..<3600: return "\(seconds / 60)m ago"
        default: return "\(seconds / 3600)h\(seconds % 3600 / 60)m ago"
        }
    }
}

struct ClientJSON: Encodable {
    var instance_id, environment, node, version: String
    var connected_at: String
    var last_heartbeat: String?
    var in_flight: UInt32
    var methods: [String]
    var remote_address: String

    init(_ client: AdminClientInfo) {
        instance_id = client.instanceID
        environment = client.environment
        node = client.node
        version = client.version
        connected_at = client.connectedAt.date.formatted(.iso8601)
        last_heartbeat = client.hasLastHeartbeat ? client.lastHeartbeat.date.formatted(.iso8601) : nil
        in_flight = client.inFlight
        methods = client.methods
        remote_address = client.remoteAddress
    }
}
