import GRDB
import Logging
import Synchronization

/// Shares commits between concurrent writers: everything waiting goes into one `BEGIN
/// IMMEDIATE` transaction and one fsync releases them all; when a write is refused, the
/// batch is applied again with a savepoint per write so only that one fails. With
/// `synchronous=FULL` that is what keeps throughput from collapsing to the disk's fsync rate.
final class GroupCommitter: Sendable {
    /// Writes per transaction at most, so one commit never holds the lock for long.
    static let maximumBatch = 1024

    private struct Write: Sendable {
        let apply: @Sendable (Database) throws -> Void
        let done: (@Sendable ((any Error)?) -> Void)?
        /// A submitted write (not awaited) that a failed commit puts back, until it is
        /// written: a final row lost to a full disk would turn an answered call into an
        /// expired one at the next start.
        var retried = false
    }

    private struct State {
        var queue: [Write] = []
        var waiter: CheckedContinuation<Void, Never>?
        var stopped = false
        /// Set by ``finish()``: commit what is queued, then stop.
        var finishing = false
        /// Failed commits in a row; the writer waits longer after each.
        var failedCommits = 0
    }

    private let pool: DatabasePool
    private let logger: Logger
    private let state = Mutex(State())
    /// The last commit's failure, nil once a commit succeeds again.
    let health = Mutex<JournalError?>(nil)

    init(pool: DatabasePool, logger: Logger) {
        self.pool = pool
        self.logger = logger
    }

    /// Applies `body` in the next group commit and returns its result once committed.
    func commit<Result: Sendable>(_ body: @escaping @Sendable (Database) throws -> Result) async throws -> Result {
        let box = ResultBox<Result>()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let accepted = enqueue(Write(
                apply: { db in box.set(try body(db)) },
                done: { error in
                    if let error { continuation.resume(throwing: error) } else { continuation.resume() }
                }
            ))
            if !accepted {
                continuation.resume(throwing: JournalError(code: .closed, message: "the journal's writer has stopped; nothing was recorded"))
            }
        }
        return box.value!
    }

    /// Applies `body` in the next group commit without waiting for it. For state changes
    /// whose loss in a crash only repeats work (a retry re-reads the row); failures are logged.
    func submit(whenDone: @escaping @Sendable () -> Void = {}, _ body: @escaping @Sendable (Database) throws -> Void) {
        let logger = self.logger
        let accepted = enqueue(Write(apply: body, done: { error in
            if let error { logger.error("journal write failed", metadata: ["error": "\(error)"]) }
            whenDone()
        }, retried: true))
        if !accepted {
            logger.error("journal write dropped: the writer has stopped")
            whenDone()
        }
    }

    private func enqueue(_ write: Write) -> Bool {
        let (accepted, waiter) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
            guard !state.stopped else { return (false, nil) }
            state.queue.append(write)
            defer { state.waiter = nil }
            return (true, state.waiter)
        }
        waiter?.resume()
        return accepted
    }

    /// Commits batches until ``finish()`` (then commits everything still queued, refuses
    /// more, and returns) or until cancelled (then tries the rest once: a cancelled task's
    /// database access may be refused, so a clean stop uses ``finish()``).
    func run() async {
        while !Task.isCancelled {
            await waitForWork()
            await commitQueued()
            let (done, failures, abandoned) = state.withLock { state -> (Bool, Int, [Write]) in
                // Finishing gives put-back writes three more tries, not forever.
                guard state.finishing && (state.queue.isEmpty || state.failedCommits > 3) else { return (false, state.failedCommits, []) }
                state.stopped = true
                defer { state.queue = [] }
                return (true, state.failedCommits, state.queue)
            }
            if done {
                let failure = JournalError(code: .writeFailed, message: "the journal stopped before \(abandoned.count) write(s) could be committed")
                for write in abandoned { write.done?(failure) }
                return
            }
            if failures > 0 {
                // 100 ms doubling to 5 s: a full disk is not retried in a busy loop.
                try? await Task.sleep(for: .milliseconds(min(5000, 100 << min(failures - 1, 6))))
            }
        }
        let rest = state.withLock { state in
            state.stopped = true
            defer { state.queue = [] }
            return state.queue
        }
        if !rest.isEmpty { await commit(rest) }
    }

    /// Writes waiting for the next commit (the unit tests hold the writer back until a batch
    /// has formed).
    var queuedWrites: Int { state.withLock { $0.queue.count } }

    /// Ends ``run()`` once what is queued now (and what is submitted until then) is committed.
    func finish() {
        state.withLock { state in
            state.finishing = true
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }

    private func waitForWork() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state in
                    if !state.queue.isEmpty || state.finishing || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
        }
    }

    private func commitQueued() async {
        let batch = state.withLock { state -> [Write] in
            let count = min(state.queue.count, Self.maximumBatch)
            defer { state.queue.removeFirst(count) }
            return Array(state.queue.prefix(count))
        }
        if !batch.isEmpty { await commit(batch) }
    }

    /// Told how long each successful group commit took (for the commit-duration metric).
    let commitObserver = Mutex<(@Sendable (Duration) -> Void)?>(nil)

    private func commit(_ batch: [Write]) async {
        let started = ContinuousClock.now
        do {
            let failures = try await pool.writeWithoutTransaction { db -> [JournalError?] in
                do {
                    // The common case: every write applies; one transaction, no savepoints.
                    try db.inTransaction(.immediate) {
                        for write in batch { try write.apply(db) }
                        return .commit
                    }
                    return [JournalError?](repeating: nil, count: batch.count)
                } catch {
                    // One write was refused and the transaction rolled back: apply them one by
                    // one, each in its own savepoint, so only the bad one fails.
                    return try Self.applySeparately(batch, db)
                }
            }
            health.withLock { $0 = nil }
            state.withLock { $0.failedCommits = 0 }
            if let observer = commitObserver.withLock({ $0 }) { observer(.now - started) }
            for (write, failure) in zip(batch, failures) { write.done?(failure) }
        } catch {
            let corrupt = (error as? DatabaseError).map { [.SQLITE_CORRUPT, .SQLITE_NOTADB].contains($0.resultCode) } ?? false
            let failure = JournalError(
                code: corrupt ? .corrupt : .writeFailed,
                message: corrupt
                    ? "the journal file is corrupt, so \(batch.count) write(s) were not recorded; stop the gateway and move the file aside (it then starts a new one) or restore it"
                    : "the journal could not commit \(batch.count) write(s) (is the disk full, or the file gone?); none of them was recorded",
                cause: error
            )
            health.withLock { $0 = failure }
            let retried = batch.filter(\.retried)
            let giveUp = state.withLock { state -> Bool in
                state.failedCommits += 1
                if state.finishing && state.failedCommits > 3 { return true }
                state.queue.insert(contentsOf: retried, at: 0)
                return false
            }
            logger.error("journal commit failed", metadata: [
                "error": "\(error)", "writes": "\(batch.count)", "kept_for_retry": "\(giveUp ? 0 : retried.count)",
            ])
            for write in batch where !write.retried || giveUp { write.done?(failure) }
        }
    }

    private static func applySeparately(_ batch: [Write], _ db: Database) throws -> [JournalError?] {
        var failures = [JournalError?](repeating: nil, count: batch.count)
        try db.inTransaction(.immediate) {
            for (index, write) in batch.enumerated() {
                do {
                    try db.inSavepoint {
                        try write.apply(db)
                        return .commit
                    }
                } catch let error as JournalError {
                    failures[index] = error
                } catch {
                    failures[index] = JournalError(code: .writeFailed, message: "a journal write was refused", cause: error)
                }
            }
            return .commit
        }
        return failures
    }
}

/// Carries a write's result out of the transaction.
private final class ResultBox<Value: Sendable>: Sendable {
    private let storage = Mutex<Value?>(nil)
    func set(_ value: Value) { storage.withLock { $0 = value } }
    var value: Value? { storage.withLock { $0 } }
}
