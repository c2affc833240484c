import ArgumentParser
import Foundation
import GatewayAdminClient
import GatewayProtocol
import SwiftProtobuf
import TextFormats

struct LookupCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lookup",
        abstract: "Ask the environments which VPS owns a DHCP lease (FindVPSByLease).",
        discussion: """
            Sends FindVPSByLease through a running gateway's admin socket to every connected \
            environment (or one, with --env) and prints the first VPS that owns the lease.

            Examples:
              vps-gateway lookup --mac 52:54:00:01:00:01
              vps-gateway lookup --mac 52:54:00:01:00:01 --ip 10.1.0.1 --env production --json
              vps-gateway lookup --ip 10.1.0.1 --timeout 500ms --admin-socket /tmp/gw.sock

            Exit codes: 0 found; 1 not found (every environment answered, none owns it); 2 no \
            receivers, deadline exceeded or failed; 64 usage error; 69 the admin socket is \
            unreachable.
            """
    )

    @Option(help: ArgumentHelp("The lease's MAC address, like 52:54:00:ab:cd:ef.", valueName: "mac"))
    var mac: String?

    @Option(help: ArgumentHelp("The lease's IP address.", valueName: "ip"))
    var ip: String?

    @OptionGroup var target: CallTargetOptions

    @Option(help: ArgumentHelp("How long to wait for an answer.", valueName: "duration"))
    var timeout = DurationArgument(.seconds(2), text: "2s")

    @Flag(help: "Print one JSON object (admin API field names plus vps_id and organization_id).")
    var json = false

    @OptionGroup var admin: AdminSocketOption

    func validate() throws {
        guard mac != nil || ip != nil else { throw ValidationError("give --mac, --ip or both") }
        if let mac, MACAddress(mac) == nil {
            throw ValidationError("--mac '\(mac)' is not a MAC address; expected \(MACAddress.expectedFormat)")
        }
        if let ip, !IPAddressText.isValid(ip) {
            throw ValidationError("--ip '\(ip)' is not an IP address; expected \(IPAddressText.expectedFormat)")
        }
        _ = try timeout.requirePositive("--timeout")
    }

    func run() async throws {
        let payload = try FindVPSByLeaseRequest.with {
            $0.mac = mac.flatMap { MACAddress($0)?.canonical } ?? ""
            $0.ip = ip ?? ""
        }.serializedBytes() as Data
        let request = AdminCallRequest.with {
            $0.method = RequestMethods.findVPSByLease.name
            $0.payload = payload
            $0.environment = target.environment
            $0.instanceID = target.instanceID
            $0.timeoutMs = timeout.milliseconds
        }
        let response = try await withAdmin(admin) { try await $0.call(request) }
        let owner = response.outcome == .ok ? try? FindVPSByLeaseResponse(serializedBytes: response.payload) : nil
        if json {
            try printJSON(LookupJSON(response, owner: owner))
        } else if let owner {
            // Untrusted text from the instance that answered: escaped before the terminal sees it.
            print("\(Printable.escaped(owner.vpsID)) (organization \(Printable.escaped(owner.organizationID))) — answered by \(Printable.escaped(response.responderEnvironment))/\(Printable.escaped(response.responderInstance)) in \(response.durationUs) µs")
        } else {
            printError(response.summary)
        }
        throw response.exitCode
    }
}

struct LookupJSON: Encodable {
    var call: CallResponseJSON
    var vps_id: String
    var organization_id: String

    init(_ response: AdminCallResponse, owner: FindVPSByLeaseResponse?) {
        call = CallResponseJSON(response)
        vps_id = owner?.vpsID ?? ""
        organization_id = owner?.organizationID ?? ""
    }

    func encode(to encoder: any Encoder) throws {
        try call.encode(to: encoder)
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(vps_id, forKey: .vps_id)
        try container.encode(organization_id, forKey: .organization_id)
    }

    enum Keys: String, CodingKey { case vps_id, organization_id }
}
