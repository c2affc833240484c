import DHCPLeases
import Foundation
import GatewayJournal
import GatewayProtocol
import SwiftProtobuf
import TextFormats

/// How the lease watcher asks the environments who owns a lease: `FindVPSByLease` through
/// the journal (so a lookup in flight when the gateway dies finishes after the restart), or
/// straight through the fan-out when the gateway runs without a journal.
struct LeaseLookups: Sendable {
    let router: CallRouter
    let runner: RequestRunner?
    let timeout: Duration

    func callAsFunction(_ lease: DHCPLease, _ requestID: String) async -> LeaseTable.Outcome {
        let payload: Data
        do {
            payload = try FindVPSByLeaseRequest.with {
                $0.mac = lease.mac.canonical
                $0.ip = lease.ip
            }.serializedBytes()
        } catch {
            return .failed("cannot encode the lookup: \(error)")
        }
        if let runner {
            let now = JournalClock.now()
            let record = JournalRecord(
                requestID: requestID, method: GatewayMethod.findVPSByLease, payload: payload,
                targetEnvironment: nil, targetInstance: nil, origin: "dhcp",
                now: now, deadline: now + Int64(timeout.secondsValue * 1000)
            )
            do {
                let final = try await runner.call(record, waitForEnd: true)
                return Self.outcome(final.outcome, payload: final.resultPayload, error: final.error)
            } catch {
                switch error {
                case .notRecorded(let cause): return .failed("not recorded in the journal: \(cause)")
                case .interrupted: return .failed("the gateway is stopping")
                }
            }
        }
        let result = await router.call(OutgoingCall(
            requestID: requestID, method: GatewayMethod.findVPSByLease, payload: payload,
            target: .all, deadline: .now + timeout
        ))
        return Self.outcome(result.outcome.rawValue, payload: result.payload, error: result.error)
    }

    static func outcome(_ outcome: String?, payload: Data?, error: String?) -> LeaseTable.Outcome {
        switch outcome {
        case CallResult.Outcome.ok.rawValue:
            guard let payload, let owner = try? FindVPSByLeaseResponse(serializedBytes: payload), !owner.vpsID.isEmpty else {
                return .failed("the answer is not a FindVPSByLeaseResponse naming a VPS")
            }
            return .found(vpsID: owner.vpsID, organizationID: owner.organizationID)
        case CallResult.Outcome.notFound.rawValue:
            return .notFound
        default:
            return .failed("\(outcome ?? "no outcome"): \(error ?? "")")
        }
    }
}

extension AdminListLeasesResponse {
    init(_ status: LeaseWatcher.Status, configuration: LeaseWatcher.Configuration, summaryOnly: Bool) {
        self = .with { response in
            response.activeLeases = UInt32(clamping: status.summary.active)
            response.watching = true
            response.leaseFile = configuration.leaseFile
            response.hostsFile = configuration.hostsFile
            response.expiredLines = UInt32(clamping: status.summary.expired)
            response.malformedLines = UInt32(clamping: status.summary.malformed)
            response.ipv6Lines = UInt32(clamping: status.summary.ipv6)
            response.hostsEntries = UInt32(clamping: status.hostsEntries)
            if let last = status.lastReconcile { response.lastReconcile = .init(date: last) }
            response.lastReconcileUs = UInt64(max(0, status.lastReconcileMicros))
            response.lastError = status.lastError ?? ""
            guard !summaryOnly else { return }
            response.leases = status.entries.map { entry in
                AdminLeaseInfo.with { info in
                    info.mac = entry.lease.mac.canonical
                    info.ip = entry.lease.ip
                    info.hostname = entry.lease.hostname ?? ""
                    if entry.lease.expiry > 0 { info.expiresAt = .init(seconds: entry.lease.expiry) }
                    func at(_ seconds: Int64) -> Google_Protobuf_Timestamp { .init(seconds: seconds) }
                    switch entry.resolution {
                    case nil:
                        info.state = "waiting"
                    case .vpsHostname:
                        info.state = "vps_hostname"
                    case .pending(let requestID, let since, _):
                        info.state = "pending"
                        info.requestID = requestID
                        info.resolvedAt = at(since)
                    case .found(_, let time):
                        info.state = "found"
                        info.resolvedAt = at(time)
                    case .notFound(let time, _):
                        info.state = "not_found"
                        info.resolvedAt = at(time)
                    case .failed(let error, let time, _, _):
                        info.state = "failed"
                        info.error = error
                        info.resolvedAt = at(time)
                    }
                    if let owner = entry.resolution?.owner {
                        info.vpsID = owner.vpsID
                        info.organizationID = owner.organizationID
                    }
                }
            }
        }
    }
}
