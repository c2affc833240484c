public import Foundation
import GRDB

extension RequestJournal {
    /// What ``insert(_:)`` found.
    public enum Insertion: Sendable {
        /// The row is recorded as pending.
        case inserted
        /// A row with this request id exists already (an idempotent repeat).
        case exists(JournalRecord)
    }

    /// Records a new pending request; returns once committed.
    public func insert(_ record: JournalRecord) async throws -> Insertion {
        try await committer.commit { db in
            try record.insert(db)
            if db.changesCount > 0 { return .inserted }
            guard let existing = try JournalRecord.fetchOne(db, key: record.requestID) else {
                throw JournalError(code: .writeFailed, message: "request '\(record.requestID)' was neither inserted nor found")
            }
            return .exists(existing)
        }
    }

    /// Marks the start of an attempt. Not waited for: after a crash the row is still
    /// unfinished either way, and its retry repeats the same request id.
    public func markInFlight(_ requestID: String, attempt: Int, owner: String) {
        let now = JournalClock.now()
        committer.submit { db in
            try db.cachedStatement(
                sql: "UPDATE requests SET state = 'in_flight', attempts = ?, lease_owner = ?, updated_at = ? WHERE request_id = ? AND state IN ('pending', 'in_flight')"
            ).execute(arguments: [attempt, owner, now, requestID])
        }
    }

    /// Gives an unfinished request back for the next start (the gateway stopped before it
    /// ended): pending, no owner, `attempts` as given. Not waited for.
    public func release(_ requestID: String, attempts: Int) {
        let now = JournalClock.now()
        committer.submit { db in
            try db.cachedStatement(
                sql: "UPDATE requests SET state = 'pending', attempts = ?, lease_owner = NULL, updated_at = ? WHERE request_id = ? AND state IN ('pending', 'in_flight')"
            ).execute(arguments: [max(0, attempts), now, requestID])
        }
    }

    /// Puts a request back to pending after a failed attempt. Not waited for (see
    /// ``markInFlight(_:attempt:owner:)``).
    public func scheduleRetry(_ requestID: String, at nextAttempt: Int64, outcome: JournalOutcome, error: String) {
        let now = JournalClock.now()
        committer.submit { db in
            try db.cachedStatement(
                sql: "UPDATE requests SET state = 'pending', next_attempt_at = ?, outcome = ?, error = ?, updated_at = ? WHERE request_id = ? AND state IN ('pending', 'in_flight')"
            ).execute(arguments: [nextAttempt, outcome.rawValue, error, now, requestID])
        }
    }

    /// Writes a request's final row (state, outcome, responder, result) in the next group
    /// commit without waiting for it; a failed write is logged. `whenWritten` runs after the
    /// commit, whether it succeeded or not.
    public func finish(_ final: JournalRecord, whenWritten: @escaping @Sendable () -> Void = {}) {
        precondition(final.state.isTerminal, "finish takes a terminal state")
        committer.submit(whenDone: whenWritten) { db in try final.writeEnd(db) }
    }

    /// Which rows a replay takes.
    public struct ReplaySelection: Sendable {
        public var requestIDs: [String]
        /// Rows in this terminal state (failed or expired), when no ids are given.
        public var state: JournalRecord.State?
        /// Only rows created at or after this time (milliseconds), when given.
        public var since: Int64?

        public init(requestIDs: [String] = [], state: JournalRecord.State? = nil, since: Int64? = nil) {
            self.requestIDs = requestIDs
            self.state = state
            self.since = since
        }
    }

    /// Makes finished rows pending again with the same request id and a new deadline, and
    /// returns them. Unfinished rows are left alone (they are running already).
    public func resetForReplay(_ selection: ReplaySelection, deadline: Int64, limit: Int = 1_000_000) async throws -> [JournalRecord] {
        let now = JournalClock.now()
        return try await committer.commit { db in
            try Self.reset(db, selection, now: now, deadline: deadline, limit: limit)
        }
    }

    /// ``resetForReplay(_:deadline:limit:)`` for a journal no gateway is running on (the next
    /// gateway start picks the rows up).
    public func resetForReplayOffline(_ selection: ReplaySelection, deadline: Int64, limit: Int = 1_000_000) async throws -> [JournalRecord] {
        let now = JournalClock.now()
        return try await pool.writeWithoutTransaction { db in
            var records: [JournalRecord] = []
            try db.inTransaction(.immediate) {
                records = try Self.reset(db, selection, now: now, deadline: deadline, limit: limit)
                return .commit
            }
            return records
        }
    }

    private static func reset(_ db: Database, _ selection: ReplaySelection, now: Int64, deadline: Int64, limit: Int) throws -> [JournalRecord] {
        var conditions: [String] = ["state IN ('completed', 'failed', 'expired')"]
        var arguments: StatementArguments = []
        if !selection.requestIDs.isEmpty {
            conditions.append("request_id IN (\(selection.requestIDs.map { _ in "?" }.joined(separator: ",")))")
            arguments += StatementArguments(selection.requestIDs)
        } else if let state = selection.state {
            conditions.append("state = ?")
            arguments += [state.rawValue]
        }
        if let since = selection.since {
            conditions.append("created_at >= ?")
            arguments += [since]
        }
        let filter = conditions.joined(separator: " AND ")
        let ids = try String.fetchAll(db, sql: "SELECT request_id FROM requests WHERE \(filter) ORDER BY created_at LIMIT \(limit)", arguments: arguments)
        guard !ids.isEmpty else { return [] }
        var records: [JournalRecord] = []
        for chunk in stride(from: 0, to: ids.count, by: 500).map({ Array(ids[$0..<min($0 + 500, ids.count)]) }) {
            let placeholders = chunk.map { _ in "?" }.joined(separator: ",")
            try db.execute(
                sql: """
                    UPDATE requests SET state = 'pending', origin = 'replay', next_attempt_at = ?, deadline_at = ?, updated_at = ?,
                        outcome = NULL, error = NULL, result_payload = NULL, responder_instance = NULL, responder_environment = NULL
                    WHERE request_id IN (\(placeholders))
                    """,
                arguments: [now, deadline, now] + StatementArguments(chunk)
            )
            records += try JournalRecord.fetchAll(db, sql: "SELECT * FROM requests WHERE request_id IN (\(placeholders))", arguments: StatementArguments(chunk))
        }
        return records
    }

    /// Marks unfinished rows whose deadline passed as expired; returns how many.
    public func expireOverdue(now: Int64 = JournalClock.now()) async throws -> Int {
        try await committer.commit { db in
            try db.execute(
                sql: """
                    UPDATE requests SET state = 'expired', updated_at = ?, lease_owner = NULL,
                        outcome = coalesce(outcome, 'deadline_exceeded'),
                        error = coalesce(error || '; ', '') || 'deadline passed before an answer (found at gateway start)'
                    WHERE state IN ('pending', 'in_flight') AND deadline_at <= ?
                    """,
                arguments: [now, now]
            )
            return db.changesCount
        }
    }

    /// Deletes up to `batch` terminal rows last updated before `cutoff`; returns how many.
    /// Small batches keep each write transaction short, so the gateway's writer never waits
    /// long for a prune running beside it.
    public func pruneBatch(olderThan cutoff: Int64, batch: Int = 1000) async throws -> Int {
        try await pool.writeWithoutTransaction { db in
            var deleted = 0
            try db.inTransaction(.immediate) {
                try db.execute(
                    sql: """
                        DELETE FROM requests WHERE request_id IN (
                            SELECT request_id FROM requests WHERE state IN ('completed', 'failed', 'expired') AND updated_at < ? LIMIT ?)
                        """,
                    arguments: [cutoff, batch]
                )
                deleted = db.changesCount
                return .commit
            }
            return deleted
        }
    }

    /// Copies the WAL back into the database file and truncates it, so it stays bounded
    /// under constant load. Returns the WAL pages that were in it.
    @discardableResult
    public func checkpoint() async throws -> Int {
        try await pool.writeWithoutTransaction { db in
            let row = try Row.fetchOne(db, sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            return row?[1] ?? 0
        }
    }

    /// Writes `count` pending rows directly (for measuring replay): method and payload as
    /// given, request ids `prefix-000001`…, deadline as given.
    public func generatePending(count: Int, method: String, payload: Data, deadline: Int64, prefix: String, progress: @Sendable (Int) -> Void = { _ in }) async throws {
        let now = JournalClock.now()
        var written = 0
        while written < count {
            let chunk = min(10_000, count - written)
            let start = written
            try await pool.writeWithoutTransaction { db in
                try db.inTransaction(.immediate) {
                    let statement = try db.makeStatement(sql: """
                        INSERT INTO requests (request_id, method, payload, origin, state, attempts, created_at, updated_at, next_attempt_at, deadline_at)
                        VALUES (?, ?, ?, 'generated', 'pending', 0, ?, ?, ?, ?)
                        """)
                    for index in start..<(start + chunk) {
                        try statement.execute(arguments: [String(format: "%@-%06d", prefix, index + 1), method, payload, now, now, now, deadline])
                    }
                    return .commit
                }
            }
            written += chunk
            progress(written)
        }
    }
}
