import DHCPLeases
import Foundation
import GatewayJournal
import GatewayProtocol
import Logging
import RPCEndpoint
import SwiftProtobuf
import TextFormats

/// The admin API on the Unix socket: `Call` sends one request through the fan-out,
/// `ListClients` lists the connected instances, `Replay` and `ListLeases` serve the journal
/// and lease commands. Every method speaks gRPC and Connect (unary, binary or JSON), so
/// `curl --unix-socket … --http2-prior-knowledge -H 'content-type: application/json'` works.
struct AdminService: Sendable {
    let gateway: Gateway

    func register(on router: inout RPCRouter) {
        router.unary(RPCMethods.call) { (request: AdminCallRequest, _) in try await call(request: request) }
        router.unary(RPCMethods.listClients) { (request: AdminListClientsRequest, _) in listClients(request: request) }
        router.unary(RPCMethods.replay) { (request: AdminReplayRequest, _) in try await replay(request: request) }
        router.unary(RPCMethods.listLeases) { (request: AdminListLeasesRequest, _) in listLeases(request: request) }
    }

    func call(request given: AdminCallRequest) async throws -> AdminCallResponse {
        var request = given
        if request.hasArguments {
            guard request.payload.isEmpty else {
                throw RPCStatus(.invalidArgument, "give either payload or arguments, not both")
            }
            request.payload = try gateway.methodMessages.payload(for: request.method, arguments: request.arguments)
        }
        guard !gateway.isShuttingDown else {
            throw RPCStatus(.unavailable, "the gateway is shutting down; nothing was recorded or sent; call again once it is back")
        }
        guard !request.method.isEmpty else {
            throw RPCStatus(.invalidArgument, "method is empty; expected a method name such as \(RequestMethods.findVPSByLease.name)")
        }
        let configuration = gateway.configuration
        let timeout: Duration = request.timeoutMs == 0
            ? configuration.defaultCallTimeout : .milliseconds(Int64(request.timeoutMs))
        guard timeout <= configuration.maxCallTimeout else {
            throw RPCStatus(.invalidArgument, "timeout_ms \(request.timeoutMs) is above the gateway's maximum of \(configuration.maxCallTimeout)")
        }
        let requestID = request.requestID.isEmpty ? RequestID.new() : request.requestID
        guard requestID.utf8.count <= 128 else {
            throw RPCStatus(.invalidArgument, "request_id is \(requestID.utf8.count) bytes; expected at most 128")
        }
        let started = ContinuousClock.now
        let target = CallTarget(
            environment: request.environment.isEmpty ? nil : request.environment,
            instanceID: request.instanceID.isEmpty ? nil : request.instanceID
        )
        let response: AdminCallResponse
        if let journal = gateway.journal, let runner = gateway.runner {
            response = try await journaledCall(request, requestID: requestID, target: target, timeout: timeout, journal: journal, runner: runner)
        } else {
            guard !request.async else {
                throw RPCStatus(.failedPrecondition, "async calls need the request journal; this gateway runs with --journal off")
            }
            let result = await gateway.router.call(OutgoingCall(
                requestID: requestID, method: request.method, payload: request.payload, target: target, deadline: started + timeout
            ))
            if result.outcome == .interrupted {
                throw RPCStatus(.unavailable, "the gateway shut down before request \(requestID) ended; without a journal it is not retried")
            }
            response = .with {
                $0.requestID = requestID
                $0.outcome = AdminOutcome(result.outcome)
                $0.payload = result.payload
                $0.responderInstance = result.responder?.instanceID ?? ""
                $0.responderEnvironment = result.responder?.environment ?? ""
                $0.error = result.error
                $0.attempts = 1
            }
        }
        var timed = response
        timed.durationUs = UInt64(max(0, (ContinuousClock.now - started).secondsValue * 1_000_000))
        // Only for a caller that spoke JSON-shaped arguments: decoding every answer into
        // JSON costs a binary client's call about 4 % of the gateway's CPU for nothing.
        if given.hasArguments, timed.outcome == .ok, let result = gateway.methodMessages.result(for: request.method, payload: timed.payload) {
            timed.result = result
        }
        if !request.async {
            gateway.recordCall(method: request.method, outcome: BenchmarkName.outcome(response.outcome), duration: ContinuousClock.now - started)
        }
        // `.string` rather than interpolations: each of those built a new string per line.
        gateway.logger.info(request.async ? "call recorded" : "call finished", metadata: [
            "message_id": .string(LogEventID.callFinished),
            "request_id": .string(requestID), "method": .string(request.method), "outcome": .string(BenchmarkName.outcome(response.outcome)),
            "state": .string(response.state), "attempts": "\(response.attempts)",
            "instance": .string(response.responderInstance), "environment": .string(response.responderEnvironment),
            "duration_us": "\(timed.durationUs)", "error": .string(response.error),
        ])
        return timed
    }

    /// Records the call as pending (returning only once that is committed), then runs it
    /// through the journal's runner; a repeated request id gets the first call's outcome.
    private func journaledCall(
        _ request: AdminCallRequest,
        requestID: String,
        target: CallTarget,
        timeout: Duration,
        journal: RequestJournal,
        runner: RequestRunner
    ) async throws -> AdminCallResponse {
        let now = JournalClock.now()
        let record = JournalRecord(
            requestID: requestID, method: request.method, payload: request.payload,
            targetEnvironment: target.environment, targetInstance: target.instanceID, origin: "admin",
            now: now, deadline: now + Int64(timeout.secondsValue * 1000)
        )
        do {
            return AdminCallResponse(try await runner.call(record, waitForEnd: !request.async))
        } catch {
            switch error {
            case .notRecorded(let cause):
                // Its own code: the CLI exits 74 (a write failed), not "is the gateway running?".
                throw RPCStatus(.resourceExhausted, "the request was not recorded in the journal, so it was not sent: \(cause)")
            case .interrupted:
                throw RPCStatus(.unavailable, "the gateway is shutting down; request \(requestID) stays pending in the journal and is retried at the next start")
            }
        }
    }

    func listLeases(request: AdminListLeasesRequest) -> AdminListLeasesResponse {
        guard let watcher = gateway.leaseWatcher else { return .with { $0.watching = false } }
        return AdminListLeasesResponse(watcher.status(withEntries: !request.summaryOnly), configuration: watcher.configuration, summaryOnly: request.summaryOnly)
    }

    func replay(request: AdminReplayRequest) async throws -> AdminReplayResponse {
        guard let journal = gateway.journal, let runner = gateway.runner else {
            throw RPCStatus(.failedPrecondition, "replay needs the request journal; this gateway runs with --journal off")
        }
        var selection = RequestJournal.ReplaySelection(requestIDs: request.requestIds)
        if request.requestIds.isEmpty {
            guard let state = JournalRecord.State(rawValue: request.state), state == .failed || state == .expired || state == .completed else {
                throw RPCStatus(.invalidArgument, "state '\(request.state)' cannot be replayed; expected failed, expired or completed, or give request ids")
            }
            selection.state = state
        }
        if request.sinceMs > 0 { selection.since = request.sinceMs }
        let timeout: Duration = request.timeoutMs == 0 ? gateway.configuration.defaultCallTimeout : .milliseconds(Int64(request.timeoutMs))
        let records: [JournalRecord]
        do {
            records = try await journal.resetForReplay(selection, deadline: JournalClock.now() + Int64(timeout.secondsValue * 1000))
        } catch {
            throw RPCStatus(.unavailable, "could not mark the requests for replay: \(error)")
        }
        for record in records { runner.submit(record) }
        gateway.logger.notice("journal replay", metadata: ["requests": "\(records.count)"])
        return .with {
            $0.replayed = UInt32(clamping: records.count)
            $0.requestIds = records.map(\.requestID)
        }
    }

    func listClients(request: AdminListClientsRequest) -> AdminListClientsResponse {
        let connections = gateway.clients.connections(environment: request.environment.isEmpty ? nil : request.environment)
        return .with {
            $0.clients = connections.map { connection in
                AdminClientInfo.with {
                    $0.instanceID = connection.identity.instanceID
                    $0.environment = connection.identity.environment
                    $0.node = connection.identity.node
                    $0.version = connection.identity.version
                    $0.connectedAt = .init(date: connection.identity.connectedAt)
                    if let heartbeat = connection.lastHeartbeat { $0.lastHeartbeat = .init(date: heartbeat) }
                    $0.inFlight = UInt32(clamping: max(0, connection.inFlightCount))
                    $0.methods = connection.identity.methods
                    $0.remoteAddress = connection.identity.remoteAddress
                }
            }
        }
    }
}

extension AdminCallResponse {
    /// The admin view of a journal row.
    init(_ record: JournalRecord) {
        self = .with {
            $0.requestID = record.requestID
            $0.outcome = record.outcome.map { AdminOutcome(CallResult.Outcome($0)) } ?? .unspecified
            $0.payload = record.resultPayload ?? Data()
            $0.responderInstance = record.responderInstance ?? ""
            $0.responderEnvironment = record.responderEnvironment ?? ""
            $0.error = record.error ?? ""
            $0.attempts = UInt32(clamping: record.attempts)
            $0.state = record.state.rawValue
        }
    }
}

/// Outcome names as the logs and JSON outputs spell them.
enum BenchmarkName {
    static func outcome(_ outcome: AdminOutcome) -> String {
        switch outcome {
        case .ok: "ok"
        case .notFound: "not_found"
        case .noReceivers: "no_receivers"
        case .deadlineExceeded: "deadline_exceeded"
        case .failed: "failed"
        case .unspecified, .UNRECOGNIZED: "pending"
        }
    }
}

extension AdminOutcome {
    init(_ outcome: CallResult.Outcome) {
        switch outcome {
        case .ok: self = .ok
        case .notFound: self = .notFound
        case .noReceivers: self = .noReceivers
        case .deadlineExceeded: self = .deadlineExceeded
        case .failed, .interrupted: self = .failed
        }
    }
}
