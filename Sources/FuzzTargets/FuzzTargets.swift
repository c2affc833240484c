import DHCPLeases
import Foundation
import GatewayProtocol
import GatewayServer
import SwiftProtobuf
import TextFormats

/// Inputs an attacker controls, run through the code that reads them, with the properties
/// that must hold whatever the bytes: no crash, no hang, and nothing that reaches the hosts
/// file dnsmasq serves but `<ip> <dns-label>` lines. A broken property stops the process
/// (libFuzzer saves the input that did it).
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// dnsmasq's lease file, as a tenant's DHCP client shapes it (hostname, client id).
    case leaseFile = "lease-file"
    /// A message on a registered stream: register, response, anything protobuf decodes.
    case sessionMessage = "session-message"

    public func run(_ bytes: [UInt8]) {
        switch self {
        case .leaseFile: Self.leaseFile(bytes)
        case .sessionMessage: Self.sessionMessage(bytes)
        }
    }

    static let now: Int64 = 1_800_000_000

    static func leaseFile(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        let (leases, summary) = LeaseFile.parse(text[...], now: now)
        let lines = text.split(whereSeparator: \.isNewline).count
        require(summary.active + summary.expired + summary.malformed + summary.ipv6 <= lines, "the summary counts more lines than the file has")
        require(leases.filter { $0.isActive(at: now) }.count == summary.active, "active leases and the summary disagree")
        for lease in leases {
            require(IPAddressText.isValid(lease.ip), "a lease with an invalid IP was accepted")
            require(MACAddress(lease.mac.canonical) == lease.mac, "a MAC does not survive its canonical form")
            if let hostname = lease.hostname {
                require(!hostname.contains(where: \.isNewline) && !hostname.contains(" "), "a hostname spans fields or lines")
            }
        }
        // The hostname shortcut is the path where tenant text becomes a hosts name.
        var table = LeaseTable(settings: .init(vpsHostname: HostnamePattern("*"), negativeTTL: 300, failureRetry: 30))
        for lookup in table.observe(leases, now: now, limit: 1000) {
            table.resolved(lookup, .found(vpsID: lookup.lease.hostname ?? "vps-x", organizationID: "org"), now: now)
        }
        requireHostsFileClean(HostsFile.render(table.hostsEntries(now: now)))
    }

    static func sessionMessage(_ bytes: [UInt8]) {
        guard let message = try? GatewayMessage(serializedBytes: bytes) else { return }
        switch message.messageType {
        case .register:
            guard let identity = try? ClientIdentity(registration: message.registration, remoteAddress: "ipv4:127.0.0.1:1") else { return }
            require(!identity.instanceID.isEmpty, "a registration without an instance id was accepted")
            require(identity.methods.count <= 64, "a registration with more than 64 methods was accepted")
            for field in [identity.instanceID, identity.environment, identity.node, identity.version] + identity.methods {
                require(field.utf8.count <= 256, "a registration field over 256 bytes was accepted")
                require(!field.unicodeScalars.contains { $0.properties.generalCategory == .control }, "a registration field with a control character was accepted")
            }
        case .response:
            let response = message.response
            _ = AnswerRules.byCode(response)
            switch AnswerRules.builtIn.classify(response, method: RequestMethods.findVPSByLease.name) {
            case .found:
                guard let owner = try? FindVPSByLeaseResponse(serializedBytes: response.payload) else {
                    fatalError("an answer that cannot be decoded was taken as found")
                }
                require(owner.ownerProblem == nil && HostsName.isValid(owner.vpsID), "an owner the hosts file refuses was taken as found")
                let hosts = HostsFile.render([HostsFile.Entry(ip: "10.0.0.1", name: owner.vpsID)])
                requireHostsFileClean(hosts)
                require(hosts.hasSuffix("\n10.0.0.1 \(owner.vpsID)\n"), "a found owner did not make exactly its own line")
            case .refused(let why), .failed(let why, _):
                requireEscaped(Printable.escaped(why))
            case .notFound, .unimplemented, .deadlineExceeded:
                break
            }
            requireEscaped(Printable.escaped(response.error))
        default:
            requireEscaped(Printable.escaped(message.type))
        }
    }

    static func requireHostsFileClean(_ text: String) {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where !line.hasPrefix("#") && !line.isEmpty {
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            require(fields.count == 2, "a hosts line that is not '<ip> <name>': \(Printable.escaped(String(line)))")
            require(IPAddressText.isValid(String(fields[0])) && HostsName.isValid(String(fields[1])), "a hosts line with an invalid address or name")
        }
    }

    static func requireEscaped(_ text: String) {
        require(text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value < 0x7F || $0 == "…" }, "escaped text still holds a control or non-ASCII character")
    }

    static func require(_ condition: Bool, _ property: @autoclosure () -> String) {
        if !condition { fatalError("fuzz property broken: \(property())") }
    }
}
