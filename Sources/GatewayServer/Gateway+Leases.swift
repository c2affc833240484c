import DHCPLeases
import Foundation
import GatewayJournal
import GatewayProtocol
import SwiftProtobuf
import TextFormats

/// How a call of a typed method ended, its answer decoded.
public enum MethodCallOutcome<Response: Sendable>: Sendable {
    /// A receiver's answer won (by the method's rule).
    case answered(Response)
    /// Every receiver that had to answer said it does not have it.
    case notFound
    /// No answer: no receivers, the deadline, failures, or the gateway stopping; the text
    /// says which.
    case unanswered(String)
}

/// Calls one method with a typed request: through the journal when the gateway has one (so a
/// call in flight when the gateway dies finishes after the restart), straight through the
/// fan-out otherwise. The one place that turns a request into bytes and the winning bytes
/// back into the method's response.
struct MethodCaller: Sendable {
    let router: CallRouter
    let runner: RequestRunner?

    func call<Request, Response>(
        _ method: RequestMethod<Request, Response>, _ request: Request, requestID: String, origin: String, timeout: Duration
    ) async -> MethodCallOutcome<Response> {
        let payload: Data
        do {
            payload = try method.encode(request)
        } catch {
            return .unanswered("cannot encode the \(method.name) request: \(error)")
        }
        let outcome: CallResult.Outcome?
        let answer: Data?
        let problem: String
        if let runner {
            let now = JournalClock.now()
            let record = JournalRecord(
                requestID: requestID, method: method.name, payload: payload,
                targetEnvironment: nil, targetInstance: nil, origin: origin,
                now: now, deadline: now + timeout.wholeMilliseconds
            )
            do {
                let final = try await runner.call(record, waitForEnd: true)
                (outcome, answer, problem) = (final.outcome.map(CallResult.Outcome.init), final.resultPayload, final.error ?? "")
            } catch {
                switch error {
                case .notRecorded(let cause): return .unanswered("not recorded in the journal: \(cause)")
                case .interrupted: return .unanswered("the gateway is stopping")
                }
            }
        } else {
            let result = await router.call(OutgoingCall(requestID: requestID, method: method.name, payload: payload, target: .all, deadline: .now + timeout))
            (outcome, answer, problem) = (result.outcome, result.payload, result.error)
        }
        switch outcome {
        case .ok:
            // The router judged this payload by the method's rule already; it decodes.
            guard let answer, let response = try? method.decodeResponse(from: answer) else {
                return .unanswered("the answer is not a \(method.name) response")
            }
            return .answered(response)
        case .notFound:
            return .notFound
        case let other:
            return .unanswered("\(other?.rawValue ?? "no outcome"): \(problem)")
        }
    }
}

/// How the lease watcher asks the environments who owns a lease.
struct LeaseLookups: Sendable {
    let caller: MethodCaller
    let timeout: Duration

    func callAsFunction(_ lease: DHCPLease, _ requestID: String) async -> LeaseTable.Outcome {
        let query = FindVPSByLeaseRequest.with {
            $0.mac = lease.mac.canonical
            $0.ip = lease.ip
        }
        switch await caller.call(RequestMethods.findVPSByLease, query, requestID: requestID, origin: "dhcp", timeout: timeout) {
        case .answered(let owner): return .found(vpsID: owner.vpsID, organizationID: owner.organizationID)
        case .notFound: return .notFound
        case .unanswered(let why): return .failed(why)
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
