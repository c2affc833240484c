import AsyncPrimitives
import Foundation
import GatewayJournal
import GatewayProtocol
import Logging
import Synchronization
import TextFormats

/// Runs journaled requests: every attempt goes through the fan-out, every state change into
/// the journal, failed attempts are retried with backoff until the request's deadline or
/// attempt budget, and callers waiting for a request id get its final row.
///
/// The runner owns its executions: `run()` takes submitted requests and runs each as a child
/// task, at most `maxConcurrentRequests` at a time. When it is cancelled (gateway shutdown)
/// unfinished requests are left pending in the journal for the next start.
final class RequestRunner: Sendable {
    /// How a waiting caller learns the end of a request.
    enum Completion: Sendable {
        case finished(JournalRecord)
        /// The gateway stopped first; the request stays pending in the journal.
        case interrupted
    }

    private let journal: RequestJournal
    private let router: CallRouter
    private let configuration: Gateway.Configuration
    private let logger: Logger
    /// Who holds in-flight rows: this process.
    private let owner = "pid \(ProcessInfo.processInfo.processIdentifier)@\(ProcessInfo.processInfo.hostName)"
    private let queue = MessageQueue<JournalRecord>(capacity: Int.max)
    private let runs = Mutex(Runs())

    /// Who runs which request id, and who waits for it. A request id runs at most once at a
    /// time in this process; its final row stays here until the journal has it, so a caller
    /// arriving in between gets it without reading a stale row.
    private struct Runs {
        var claims: [String: Claim] = [:]
        var waiters: [String: [CheckedContinuation<Completion, Never>]] = [:]
    }

    private enum Claim {
        case running
        case finished(JournalRecord)
    }
    private let slots: ConcurrencyLimit

    init(journal: RequestJournal, router: CallRouter, configuration: Gateway.Configuration, logger: Logger) {
        self.journal = journal
        self.router = router
        self.configuration = configuration
        self.logger = logger
        self.slots = ConcurrencyLimit(configuration.maxConcurrentJournalRequests)
    }

    /// Why ``call(_:waitForEnd:)`` has no row to give.
    enum CallFailure: Error {
        /// The pending row could not be committed: nothing was sent.
        case notRecorded(JournalError)
        /// The gateway is stopping; the row stays pending for the next start.
        case interrupted
    }

    /// Records a new request as pending (returning only once that is committed) and runs it.
    /// With `waitForEnd` it returns the final row, else the pending one at once. A request id
    /// already in the journal is not recorded again: its row is returned, or awaited while it
    /// runs.
    func call(_ record: JournalRecord, waitForEnd: Bool) async throws(CallFailure) -> JournalRecord {
        // A call run here is recorded with its first attempt already in flight: one UPDATE
        // less per call on the journal's busiest path. Either row is unfinished, so a crash
        // before the send retries it the same way; the attempt it counts is the one being made.
        var recorded = record
        if waitForEnd {
            recorded.state = .inFlight
            recorded.attempts += 1
            recorded.leaseOwner = owner
        }
        let insertion: RequestJournal.Insertion
        do {
            insertion = try await journal.insert(recorded)
        } catch {
            throw .notRecorded(error as? JournalError ?? JournalError(code: .writeFailed, message: "the journal refused the request", cause: error))
        }
        let completion: Completion
        switch insertion {
        case .exists(let existing) where existing.state.isTerminal || !waitForEnd:
            return existing
        case .exists:
            completion = await waitForRunning(record.requestID)
        case .inserted where !waitForEnd:
            submit(record)
            return record
        case .inserted:
            completion = await runHere(record, firstAttemptRecorded: true)
        }
        switch completion {
        case .finished(let final): return final
        case .interrupted: throw .interrupted
        }
    }

    /// Queues a recorded request for execution.
    func submit(_ record: JournalRecord) {
        queue.enqueue(record)
    }

    /// Runs a recorded request in the caller's task (a synchronous admin call: no hand-off
    /// to the runner) and returns its end. If the caller is cancelled before the end (its
    /// client went away), the runner takes the request over so it still finishes.
    func runHere(_ record: JournalRecord, firstAttemptRecorded: Bool = false) async -> Completion {
        let completion = await execute(record, firstAttemptRecorded: firstAttemptRecorded)
        // Handed over unless the gateway is stopping: then the row waits for the next start.
        if case .interrupted = completion, !router.isStopping { queue.enqueue(record) }
        return completion
    }

    /// Waits for the end of a request id that is recorded already (a repeat of a call).
    /// Starts it when nobody runs it (a row left pending by an earlier run, not yet
    /// recovered).
    func waitForRunning(_ requestID: String) async -> Completion {
        await withCheckedContinuation { continuation in
            let claim = runs.withLock { state -> Claim? in
                let claim = state.claims[requestID]
                if case .finished = claim { return claim }
                state.waiters[requestID, default: []].append(continuation)
                return claim
            }
            switch claim {
            case .finished(let final):
                continuation.resume(returning: .finished(final))
            case .running:
                break
            case nil:
                // Not running here: the journal says where it stands.
                guard let record = try? journal.record(requestID) else {
                    resolve(requestID, .interrupted)
                    return
                }
                if record.state.isTerminal { resolve(requestID, .finished(record)) } else { queue.enqueue(record) }
            }
        }
    }

    private func resolve(_ requestID: String, _ completion: Completion) {
        let waiters = runs.withLock { $0.waiters.removeValue(forKey: requestID) ?? [] }
        for waiter in waiters { waiter.resume(returning: completion) }
    }

    /// Takes the run of `requestID`; false (and the known end, if any) when it is taken.
    private func claim(_ requestID: String) -> (claimed: Bool, finished: JournalRecord?) {
        runs.withLock { state in
            switch state.claims[requestID] {
            case .running: return (false, nil)
            case .finished(let final): return (false, final)
            case nil:
                state.claims[requestID] = .running
                return (true, nil)
            }
        }
    }

    /// Runs submitted requests until cancelled.
    func run() async {
        await withDiscardingTaskGroup { group in
            while let batch = await queue.nextBatch() {
                for record in batch {
                    guard await slots.acquire() else { break }
                    group.addTask {
                        defer { self.slots.release() }
                        _ = await self.execute(record)
                    }
                }
            }
        }
        let stranded = runs.withLock { state in
            defer { state.waiters = [:] }
            return state.waiters
        }
        for waiter in stranded.values.joined() { waiter.resume(returning: .interrupted) }
    }

    /// Attempts until an answer, the deadline or the attempt budget; resolves the request's
    /// waiters and returns the same end.
    /// - Parameter firstAttemptRecorded: the row was inserted with its first attempt in
    ///   flight, so that attempt needs no UPDATE of its own.
    private func execute(_ record: JournalRecord, firstAttemptRecorded: Bool = false) async -> Completion {
        let requestID = record.requestID
        let (claimed, known) = claim(requestID)
        guard claimed else {
            if let known { return .finished(known) }
            return await waitForRunning(requestID)
        }
        let deadline = Self.instant(ofWallClock: record.deadlineAt)
        var attempts = record.attempts
        var last: CallResult?
        while true {
            if ContinuousClock.now >= deadline {
                return await finish(record, .expired, outcome: last?.outcome.journaled ?? .deadlineExceeded,
                                    attempts: attempts, result: last, note: "deadline passed before an answer")
            }
            attempts += 1
            if !(firstAttemptRecorded && attempts == record.attempts + 1) {
                journal.markInFlight(requestID, attempt: attempts, owner: owner)
            }
            let result = await router.call(OutgoingCall(
                requestID: requestID, method: record.method, payload: record.payload,
                target: CallTarget(environment: record.targetEnvironment, instanceID: record.targetInstance),
                deadline: deadline, attempt: UInt32(clamping: attempts)
            ))
            // Shutting down (or the caller left): the row stays unfinished for whoever runs it next.
            if Task.isCancelled { return unclaim(requestID) }
            if result.outcome == .interrupted {
                // Back to pending; an attempt that reached nobody does not count.
                journal.release(requestID, attempts: result.receivers == 0 ? attempts - 1 : attempts)
                return unclaim(requestID)
            }
            last = result
            switch result.outcome {
            case .ok:
                return await finish(record, .completed, outcome: .ok, attempts: attempts, result: result)
            case .notFound:
                return await finish(record, .completed, outcome: .notFound, attempts: attempts, result: result)
            case .noReceivers:
                return await finish(record, .expired, outcome: .noReceivers, attempts: attempts, result: result)
            case .deadlineExceeded:
                return await finish(record, .expired, outcome: .deadlineExceeded, attempts: attempts, result: result)
            case .interrupted:
                return unclaim(requestID)
            case .failed where !result.retryable || attempts >= configuration.maxAttempts:
                return await finish(record, .failed, outcome: .failed, attempts: attempts, result: result,
                                    note: result.retryable ? "gave up after \(attempts) attempt(s)" : nil)
            case .failed:
                let delay = retryDelay(afterAttempt: attempts)
                let delayMs = Int64(delay.secondsValue * 1000)
                logger.info("request attempt failed; retrying", metadata: [
                    "message_id": "\(LogEventID.attemptRetried)", "outcome": "\(result.outcome.rawValue)",
                    "request_id": "\(requestID)", "method": "\(record.method)", "attempt": "\(attempts)",
                    "retry_in_ms": "\(delayMs)", "error": "\(result.error)",
                ])
                journal.scheduleRetry(requestID, at: JournalClock.now() + delayMs, outcome: .failed, error: result.error)
                do { try await Task.sleep(for: delay) } catch { return unclaim(requestID) }
            }
        }
    }

    /// Ends a request: its waiters get the final row at once, and the row is written in the
    /// next group commit without waiting for it. If the gateway dies before that commit, the
    /// row is still unfinished at the next start and runs again with the same request id,
    /// which the worker answers from its response cache.
    private func finish(
        _ record: JournalRecord,
        _ state: JournalRecord.State,
        outcome: JournalOutcome,
        attempts: Int,
        result: CallResult?,
        note: String? = nil
    ) async -> Completion {
        let error = [result?.error, note].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "; ")
        var final = record
        final.state = state
        final.outcome = outcome
        final.attempts = attempts
        final.responderInstance = result?.responder?.instanceID
        final.responderEnvironment = result?.responder?.environment
        final.resultPayload = result?.outcome == .ok ? result?.payload : nil
        final.error = error.isEmpty ? nil : error
        final.updatedAt = JournalClock.now()
        final.leaseOwner = nil
        let requestID = record.requestID
        runs.withLock { $0.claims[requestID] = .finished(final) }
        // The caller gets the whole answer; the journal keeps it only up to the cap, so a
        // rogue instance's huge answers cannot fill the disk for a week of retention.
        var stored = final
        if let payload = stored.resultPayload, payload.count > configuration.maxStoredResultBytes {
            stored.resultPayload = nil
            let note = "the answer of \(payload.count) bytes was not stored (over --max-stored-result \(configuration.maxStoredResultBytes))"
            stored.error = [stored.error, note].compactMap { $0 }.joined(separator: "; ")
        }
        journal.finish(stored) { [self] in
            // The journal has the row now; readers get it from there.
            runs.withLock { state in
                if case .finished = state.claims[requestID] { state.claims[requestID] = nil }
            }
        }
        resolve(requestID, .finished(final))
        return .finished(final)
    }

    /// Gives up a run without an end (shutdown, or a caller that left): the row stays
    /// unfinished in the journal.
    private func unclaim(_ requestID: String) -> Completion {
        runs.withLock { _ = $0.claims.removeValue(forKey: requestID) }
        return .interrupted
    }

    /// 100 ms doubling per attempt up to the configured cap, ±20 % jitter.
    private func retryDelay(afterAttempt attempt: Int) -> Duration {
        let base = configuration.retryInitialDelay * Double(1 << min(attempt - 1, 16))
        let capped = min(base, configuration.retryMaxDelay)
        return capped * Double.random(in: 0.8...1.2)
    }

    /// A wall-clock deadline (journal milliseconds) on the monotonic clock.
    static func instant(ofWallClock milliseconds: Int64) -> ContinuousClock.Instant {
        .now + .milliseconds(milliseconds - JournalClock.now())
    }
}

/// At most `limit` holders at once; `acquire()` waits for a slot and is cancellable.
final class ConcurrencyLimit: Sendable {
    private let state: Mutex<(available: Int, waiters: [CheckedContinuation<Bool, Never>])>

    init(_ limit: Int) {
        state = Mutex((max(limit, 1), []))
    }

    /// True with a slot; false when the task was cancelled while waiting.
    func acquire() async -> Bool {
        if Task.isCancelled { return false }
        return await withCheckedContinuation { continuation in
            let granted = state.withLock { state -> Bool in
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume(returning: true) }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if state.waiters.isEmpty {
                state.available += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume(returning: true)
    }
}
