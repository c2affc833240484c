import ArgumentParser
import Foundation
import GatewayAdminClient
import GatewayProtocol
import SwiftProtobuf
import TextFormats

struct LeasesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leases",
        abstract: "Show the DHCP leases the gateway watches and what each resolved to.",
        discussion: """
            States: vps_hostname (the hostname names a VPS; no lookup), waiting (no lookup slot \
            yet), pending, found, not_found (believed until the negative cache expires), failed \
            (retried after 30 s).

            Examples:
              vps-gateway leases
              vps-gateway leases --json

            Exit codes: 0 listed; 69 the admin socket is unreachable.
            """
    )

    @Flag(help: "Print one JSON object with the admin API's field names.")
    var json = false

    @OptionGroup var admin: AdminSocketOption

    func run() async throws {
        let response = try await withAdmin(admin) { try await $0.listLeases() }
        if json {
            try printJSON(LeasesJSON(response))
            return
        }
        guard response.watching else {
            print("the gateway watches no lease file (--dhcp-leases off)")
            return
        }
        print("lease file \(response.leaseFile): \(response.activeLeases) active, \(response.expiredLines) expired, \(response.malformedLines) malformed, \(response.ipv6Lines) IPv6 lines")
        print("hosts file \(response.hostsFile): \(response.hostsEntries) entries\(response.lastError.isEmpty ? "" : "; last error: \(Printable.escaped(response.lastError))")")
        guard !response.leases.isEmpty else { return }
        print()
        printTable([["MAC", "IP", "HOSTNAME", "EXPIRES", "STATE", "VPS", "ORGANIZATION", "SINCE"]] + response.leases.map { lease in
            [
                // Hostnames are the tenants', answers the instances': untrusted, so escaped.
                lease.mac, lease.ip, lease.hostname.isEmpty ? "*" : Printable.escaped(lease.hostname, limit: 64),
                lease.hasExpiresAt ? lease.expiresAt.date.formatted(.iso8601) : "never", lease.state,
                lease.vpsID.isEmpty ? "-" : Printable.escaped(lease.vpsID, limit: 64),
                lease.organizationID.isEmpty ? "-" : Printable.escaped(lease.organizationID, limit: 64),
                lease.hasResolvedAt ? lease.resolvedAt.date.formatted(.iso8601) : "-",
            ]
        })
    }
}

struct LeasesJSON: Encodable {
    struct Lease: Encodable {
        var mac, ip, hostname, state, vps_id, organization_id, request_id, error: String
        var expires_at, resolved_at: String?
    }

    var watching: Bool
    var lease_file, hosts_file, last_error: String
    var active_leases, expired_lines, malformed_lines, ipv6_lines, hosts_entries: UInt32
    var last_reconcile: String?
    var last_reconcile_us: UInt64
    var leases: [Lease]

    init(_ response: AdminListLeasesResponse) {
        watching = response.watching
        lease_file = response.leaseFile
        hosts_file = response.hostsFile
        last_error = response.lastError
        active_leases = response.activeLeases
        expired_lines = response.expiredLines
        malformed_lines = response.malformedLines
        ipv6_lines = response.ipv6Lines
        hosts_entries = response.hostsEntries
        last_reconcile = response.hasLastReconcile ? response.lastReconcile.date.formatted(.iso8601) : nil
        last_reconcile_us = response.lastReconcileUs
        leases = response.leases.map {
            Lease(
                mac: $0.mac, ip: $0.ip, hostname: $0.hostname, state: $0.state, vps_id: $0.vpsID,
                organization_id: $0.organizationID, request_id: $0.requestID, error: $0.error,
                expires_at: $0.hasExpiresAt ? $0.expiresAt.date.formatted(.iso8601) : nil,
                resolved_at: $0.hasResolvedAt ? $0.resolvedAt.date.formatted(.iso8601) : nil
            )
        }
    }
}
