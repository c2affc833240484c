import AsyncPrimitives
import Dispatch
import GRDB
import Logging
import Synchronization

/// Shares commits between concurrent writers: everything waiting goes into one `BEGIN
/// IMMEDIATE` transaction and one fsync releases them all; when a write is refused, the
/// batch is applied again with a savepoint per write so only that one fails. With
/// `synchronous=FULL` that is what keeps throughput from collapsing to the disk's fsync rate.
///
/// The commits run on a thread of the committer's own, calling GRDB synchronously (a
/// serial queue that nobody else holds runs the block on the calling thread): an async
/// write hopped from a task to the writer's dispatch queue and back for every batch, and
/// those wake-ups cost the gateway more CPU than SQLite's own work did.
///
/// A submitted write (a request's final row, not awaited) waits up to
/// ``submittedWriteDelay`` for an awaited write (the next request's pending row) and shares
/// its commit. At one call at a time the final row used to get an fsync of its own, which
/// the next call's pending row then waited behind: two fsyncs per call on the caller's path
/// instead of one.
///
/// After a commit the writer keeps watching for ``submittedWriteDelay`` instead of going
/// idle: a submitted write arriving then is left for it to find, with no wake-up of its
/// own. At one call at a time that is one wake of the writer per call (by the next pending
/// row) instead of two, and no futex call on the answer's path.
///
/// The writer thread runs under `SCHED_BATCH`: woken while every core is busy, it waits for
/// the next scheduling point instead of preempting, so more rows join its commit. A commit
/// costs the writer 200–260 µs of CPU with one call in it (the `fdatasync`, the WAL pages,
/// the wake-ups) before the rows' own work, so under load larger commits are cheaper calls;
/// on an idle core it runs at once, so one call at a time waits no longer.
final class GroupCommitter: Sendable {
    /// Writes per transaction at most, so one commit never holds the lock for long.
    static let maximumBatch = 1024
    /// How long a submitted write waits for a commit it can share, by default.
    static let defaultSubmittedWriteDelay = Duration.milliseconds(10)

    private struct Write: Sendable {
        let apply: @Sendable (Database) throws -> Void
        let done: (@Sendable ((any Error)?) -> Void)?
        /// Submitted, not awaited: a failed commit puts it back until it is written (a final
        /// row lost to a full disk would turn an answered call into an expired one at the
        /// next start), and it may wait for a commit to share.
        var submitted = false
    }

    /// What the writer thread does next, decided under the lock.
    private enum Step {
        case commit([Write])
        /// Sleep until woken, or until the deadline.
        case wait(until: DispatchTime?)
        /// Commit `last` once, fail `abandoned`, and end.
        case stop(last: [Write], abandoned: [Write])
    }

    /// Why the writer sleeps, which says what must wake it: idle, anything; lingering (a
    /// submitted write waiting, or a commit just made), only an awaited write or a full
    /// batch; backing off, nothing but a stop.
    private enum Sleep { case idle, lingering, backingOff }

    private struct State {
        var queue: [Write] = []
        var awaitedInQueue = 0
        /// When the oldest submitted write in the queue arrived, while no awaited one is there.
        var submittedSince: DispatchTime?
        var sleeping: Sleep?
        var started = false
        var stopped = false
        var cancelled = false
        /// Set by ``finish()``: commit what is queued, then stop.
        var finishing = false
        /// Failed commits in a row; the writer waits longer after each.
        var failedCommits = 0
        var retryAt: DispatchTime?
        /// When the last commit ended: the writer lingers until ``submittedWriteDelay`` after it.
        var committedAt: DispatchTime?
        /// Times a write woke the writer (for the unit tests).
        var wakingWrites = 0
        var runner: CheckedContinuation<Void, Never>?
    }

    private let pool: DatabasePool
    private let logger: Logger
    private let submittedWriteDelay: Duration
    private let state = Mutex(State())
    private let wakeup = DispatchSemaphore(value: 0)
    /// The last commit's failure, nil once a commit succeeds again.
    let health = Mutex<JournalError?>(nil)

    init(pool: DatabasePool, logger: Logger, submittedWriteDelay: Duration = GroupCommitter.defaultSubmittedWriteDelay) {
        self.pool = pool
        self.logger = logger
        self.submittedWriteDelay = submittedWriteDelay
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

    /// Applies `body` in a group commit within ``submittedWriteDelay`` without waiting for
    /// it. For state changes whose loss in a crash only repeats work (a retry re-reads the
    /// row); failures are logged.
    func submit(whenDone: @escaping @Sendable () -> Void = {}, _ body: @escaping @Sendable (Database) throws -> Void) {
        let logger = self.logger
        let accepted = enqueue(Write(apply: body, done: { error in
            if let error { logger.error("journal write failed", metadata: ["error": "\(error)"]) }
            whenDone()
        }, submitted: true))
        if !accepted {
            logger.error("journal write dropped: the writer has stopped")
            whenDone()
        }
    }

    private func enqueue(_ write: Write) -> Bool {
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            guard !state.stopped else { return (false, false) }
            state.queue.append(write)
            if write.submitted {
                if state.awaitedInQueue == 0 && state.submittedSince == nil { state.submittedSince = .now() }
            } else {
                state.awaitedInQueue += 1
                state.submittedSince = nil
            }
            let wake: Bool
            switch state.sleeping {
            case .idle?: wake = true
            case .lingering?: wake = !write.submitted || state.queue.count >= Self.maximumBatch
            case .backingOff?, nil: wake = false
            }
            if wake {
                state.sleeping = nil
                state.wakingWrites += 1
            }
            return (true, wake)
        }
        if wake { wakeup.signal() }
        return accepted
    }

    /// Commits batches on the writer thread until ``finish()`` (then commits everything still
    /// queued, refuses more, and returns) or until cancelled (then commits what is queued
    /// once, refuses more, and returns).
    func run() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let start = state.withLock { state -> Bool in
                    guard !state.started else { return false }
                    state.started = true
                    state.runner = continuation
                    return true
                }
                if start { startDetachedThread(name: "vpsgw-journal", purpose: "the journal's writer thread", scheduling: .batch) { self.loop() } } else { continuation.resume() }
            }
        } onCancel: {
            wake { $0.cancelled = true }
        }
    }

    /// Writes waiting for the next commit (the unit tests hold the writer back until a batch
    /// has formed).
    var queuedWrites: Int { state.withLock { $0.queue.count } }

    /// How many writes have woken the writer so far (the unit tests check that a final row
    /// submitted after a commit does not).
    var wakingWrites: Int { state.withLock { $0.wakingWrites } }

    /// Whether the writer is waiting (idle, lingering or backing off).
    var writerSleeps: Bool { state.withLock { $0.sleeping != nil } }

    /// Ends ``run()`` once what is queued now (and what is submitted until then) is committed.
    func finish() {
        wake { $0.finishing = true }
    }

    private func wake(_ change: (inout State) -> Void) {
        let sleeping = state.withLock { state in
            change(&state)
            defer { state.sleeping = nil }
            return state.sleeping != nil
        }
        if sleeping { wakeup.signal() }
    }

    private func loop() {
        while true {
            switch state.withLock({ nextStep(&$0, now: .now()) }) {
            case .commit(let batch):
                commit(batch)
            case .wait(let deadline):
                // A signal that comes after a timeout is left in the semaphore: the next wait
                // returns at once and the step is decided again, which is harmless.
                if let deadline { _ = wakeup.wait(timeout: deadline) } else { wakeup.wait() }
                state.withLock { $0.sleeping = nil }
            case .stop(let last, let abandoned):
                if !last.isEmpty { commit(last) }
                if !abandoned.isEmpty {
                    let failure = JournalError(code: .writeFailed, message: "the journal stopped before \(abandoned.count) write(s) could be committed")
                    for write in abandoned { write.done?(failure) }
                }
                state.withLock { $0.runner.take() }?.resume()
                return
            }
        }
    }

    private func nextStep(_ state: inout State, now: DispatchTime) -> Step {
        if state.cancelled {
            state.stopped = true
            return .stop(last: take(&state, state.queue.count), abandoned: [])
        }
        // Finishing gives put-back writes three more tries, not forever.
        if state.finishing && (state.queue.isEmpty || state.failedCommits > 3) {
            state.stopped = true
            return .stop(last: [], abandoned: take(&state, state.queue.count))
        }
        if let retryAt = state.retryAt, now < retryAt {
            state.sleeping = .backingOff
            return .wait(until: retryAt)
        }
        if state.queue.isEmpty {
            if let committedAt = state.committedAt {
                let watchedUntil = committedAt + Self.dispatchInterval(submittedWriteDelay)
                if now < watchedUntil {
                    state.sleeping = .lingering
                    return .wait(until: watchedUntil)
                }
                state.committedAt = nil
            }
            state.sleeping = .idle
            return .wait(until: nil)
        }
        if state.awaitedInQueue == 0 && !state.finishing && state.queue.count < Self.maximumBatch, let since = state.submittedSince {
            let due = since + Self.dispatchInterval(submittedWriteDelay)
            if now < due {
                state.sleeping = .lingering
                return .wait(until: due)
            }
        }
        return .commit(take(&state, min(state.queue.count, Self.maximumBatch)))
    }

    private func take(_ state: inout State, _ count: Int) -> [Write] {
        let batch = Array(state.queue.prefix(count))
        state.queue.removeFirst(count)
        state.awaitedInQueue = state.queue.count(where: { !$0.submitted })
        // What stays behind waits afresh; a batch is at most ``maximumBatch`` writes, so
        // this only ever delays a submitted write by one more round.
        state.submittedSince = state.awaitedInQueue == 0 && !state.queue.isEmpty ? .now() : nil
        return batch
    }

    private static func dispatchInterval(_ duration: Duration) -> DispatchTimeInterval {
        let (seconds, attoseconds) = duration.components
        return .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
    }

    /// Told how long each successful group commit took (for the commit-duration metric).
    struct CommitObserver: Sendable {
        let observe: @Sendable (Duration) -> Void
    }

    /// In a struct, not as a bare closure: a closure that is `Mutex`'s own (generic) value is
    /// re-abstracted on every `withLock` and written back wrapped in two more thunks, so each
    /// commit's call walked a chain that grew by two per commit: quadratic in time, and 240
    /// bytes more stack per commit in a debug build (heading for a stack overflow).
    let commitObserver = Mutex<CommitObserver?>(nil)

    private func commit(_ batch: [Write]) {
        let started = ContinuousClock.now
        do {
            let failures = try pool.writeWithoutTransaction { db -> [JournalError?] in
                do {
                    try Self.applyTogether(batch, db)
                    return [JournalError?](repeating: nil, count: batch.count)
                } catch {
                    // One write was refused and the transaction rolled back: apply them one by
                    // one, each in its own savepoint, so only the bad one fails.
                    return try Self.applySeparately(batch, db)
                }
            }
            health.withLock { $0 = nil }
            state.withLock { state in
                state.failedCommits = 0
                state.retryAt = nil
                state.committedAt = .now()
            }
            if let observer = commitObserver.withLock({ $0 }) { observer.observe(.now - started) }
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
            let retried = batch.filter(\.submitted)
            let giveUp = state.withLock { state -> Bool in
                state.failedCommits += 1
                if state.finishing && state.failedCommits > 3 { return true }
                // 100 ms doubling to 5 s: a full disk is not retried in a busy loop.
                let backoff = min(5000, 100 << min(state.failedCommits - 1, 6))
                state.retryAt = DispatchTime.now() + .milliseconds(backoff)
                state.queue.insert(contentsOf: retried, at: 0)
                if state.awaitedInQueue == 0 && !retried.isEmpty { state.submittedSince = state.submittedSince ?? .now() }
                return false
            }
            logger.error("journal commit failed", metadata: [
                "error": "\(error)", "writes": "\(batch.count)", "kept_for_retry": "\(giveUp ? 0 : retried.count)",
            ])
            for write in batch where !write.submitted || giveUp { write.done?(failure) }
        }
    }

    /// The common case: every write applies; one transaction, no savepoints.
    ///
    /// BEGIN and COMMIT are cached statements run through GRDB, so its transaction tracking
    /// and commit hooks see them as before: `inTransaction` parsed both anew for every
    /// commit, which timed at 15 µs of BEGIN's 30 at one call at a time (a commit there is
    /// about 450 µs, of which the fsync is 250).
    private static func applyTogether(_ batch: [Write], _ db: Database) throws {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            for write in batch { try write.apply(db) }
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            // A refused write leaves the transaction open, and so can a failed COMMIT (a full
            // disk); SQLite may also have rolled it back already.
            if db.isInsideTransaction { try? db.execute(sql: "ROLLBACK TRANSACTION") }
            throw error
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
