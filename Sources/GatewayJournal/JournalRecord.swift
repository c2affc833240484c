public import Foundation
import GRDB
import SQLiteDirect

/// One request in the journal.
public struct JournalRecord: Sendable, Hashable, Codable {
    public enum State: String, Sendable, Codable, CaseIterable {
        /// Recorded; waiting for its (next) attempt.
        case pending
        /// Sent to workers; waiting for answers.
        case inFlight = "in_flight"
        /// Answered: found, or not found by everyone.
        case completed
        /// Gave up: errors until the attempt budget ran out.
        case failed
        /// Its deadline passed before an answer.
        case expired

        public var isTerminal: Bool { self == .completed || self == .failed || self == .expired }
    }

    public var requestID: String
    public var method: String
    public var targetEnvironment: String?
    public var targetInstance: String?
    public var payload: Data
    public var origin: String
    public var state: State
    public var attempts: Int
    /// Milliseconds since the epoch, like every time in the journal.
    public var createdAt: Int64
    public var updatedAt: Int64
    public var nextAttemptAt: Int64
    public var deadlineAt: Int64
    public var leaseOwner: String?
    public var responderInstance: String?
    public var responderEnvironment: String?
    /// The last attempt's outcome; nil until one ended.
    public var outcome: JournalOutcome?
    public var resultPayload: Data?
    public var error: String?

    enum CodingKeys: String, CodingKey {
        case requestID = "request_id", method, targetEnvironment = "target_environment"
        case targetInstance = "target_instance", payload, origin, state, attempts
        case createdAt = "created_at", updatedAt = "updated_at", nextAttemptAt = "next_attempt_at"
        case deadlineAt = "deadline_at", leaseOwner = "lease_owner"
        case responderInstance = "responder_instance", responderEnvironment = "responder_environment"
        case outcome, resultPayload = "result_payload", error
    }

    /// A new pending request.
    public init(
        requestID: String, method: String, payload: Data, targetEnvironment: String?, targetInstance: String?,
        origin: String, now: Int64, deadline: Int64
    ) {
        self.requestID = requestID
        self.method = method
        self.targetEnvironment = targetEnvironment
        self.targetInstance = targetInstance
        self.payload = payload
        self.origin = origin
        self.state = .pending
        self.attempts = 0
        self.createdAt = now
        self.updatedAt = now
        self.nextAttemptAt = now
        self.deadlineAt = deadline
    }
}

/// How a request's last attempt ended, as the journal records it (the `outcome` column). A
/// call interrupted by the gateway's shutdown has no outcome: its row stays unfinished.
public enum JournalOutcome: String, Sendable, CaseIterable, Codable {
    /// A receiver had the answer.
    case ok
    /// Every receiver answered and none had it.
    case notFound = "not_found"
    /// No receiver was connected before the deadline.
    case noReceivers = "no_receivers"
    /// Receivers were asked but none gave a final answer in time.
    case deadlineExceeded = "deadline_exceeded"
    /// Receivers failed.
    case failed
}

/// Wall-clock milliseconds, the journal's unit of time.
public enum JournalClock {
    public static func now() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    public static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }
}

// GRDB stays out of the public API (a public type cannot conform internally), so rows are
// mapped by hand.
extension JournalRecord {
    init(row: Row) throws {
        guard let state = State(rawValue: row["state"]) else {
            throw JournalError(code: .corrupt, message: "request '\(row["request_id"] as String? ?? "?")' has unknown state '\(row["state"] as String? ?? "")'")
        }
        self.requestID = row["request_id"]
        self.method = row["method"]
        self.targetEnvironment = row["target_environment"]
        self.targetInstance = row["target_instance"]
        self.payload = row["payload"]
        self.origin = row["origin"]
        self.state = state
        self.attempts = row["attempts"]
        self.createdAt = row["created_at"]
        self.updatedAt = row["updated_at"]
        self.nextAttemptAt = row["next_attempt_at"]
        self.deadlineAt = row["deadline_at"]
        self.leaseOwner = row["lease_owner"]
        self.responderInstance = row["responder_instance"]
        self.responderEnvironment = row["responder_environment"]
        let outcome: String? = row["outcome"]
        if let outcome {
            guard let known = JournalOutcome(rawValue: outcome) else {
                throw JournalError(code: .corrupt, message: "request '\(row["request_id"] as String? ?? "?")' has unknown outcome '\(outcome)'; expected one of \(JournalOutcome.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.outcome = known
        } else {
            self.outcome = nil
        }
        self.resultPayload = row["result_payload"]
        self.error = row["error"]
    }

    static func fetchOne(_ db: Database, key requestID: String) throws -> JournalRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM requests WHERE request_id = ?"), arguments: [requestID]).map(JournalRecord.init(row:))
    }

    static func fetchAll(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [JournalRecord] {
        try Row.fetchAll(db, sql: sql, arguments: arguments).map(JournalRecord.init(row:))
    }

    /// Inserts the row unless its request id exists (then `db.changesCount` is 0).
    func insert(_ db: Database) throws {
        var statement = try DirectStatement(db, sql: Self.insertSQL)
        statement.bind(requestID)
        statement.bind(method)
        statement.bind(targetEnvironment)
        statement.bind(targetInstance)
        statement.bind(payload)
        statement.bind(origin)
        statement.bind(state.rawValue)
        statement.bind(attempts)
        statement.bind(createdAt)
        statement.bind(updatedAt)
        statement.bind(nextAttemptAt)
        statement.bind(deadlineAt)
        statement.bind(leaseOwner)
        statement.bind(responderInstance)
        statement.bind(responderEnvironment)
        statement.bind(outcome?.rawValue)
        statement.bind(resultPayload)
        statement.bind(error)
        try statement.run(db)
    }

    /// Writes a terminal row's end (state, outcome, responder, result) over its unfinished one.
    func writeEnd(_ db: Database) throws {
        var statement = try DirectStatement(db, sql: Self.writeEndSQL)
        statement.bind(state.rawValue)
        statement.bind(outcome?.rawValue)
        statement.bind(attempts)
        statement.bind(responderInstance)
        statement.bind(responderEnvironment)
        statement.bind(resultPayload)
        statement.bind(error)
        statement.bind(updatedAt)
        statement.bind(requestID)
        try statement.run(db)
    }

    /// The two statements every journaled call runs (a test reads their programs).
    static let insertSQL = """
        INSERT INTO requests (request_id, method, target_environment, target_instance, payload, origin, state, attempts,
            created_at, updated_at, next_attempt_at, deadline_at, lease_owner, responder_instance, responder_environment,
            outcome, result_payload, error)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (request_id) DO NOTHING
        """
    static let writeEndSQL = """
        UPDATE requests SET state = ?, outcome = ?, attempts = ?, responder_instance = ?, responder_environment = ?,
            result_payload = ?, error = ?, updated_at = ?, lease_owner = NULL
        WHERE request_id = ?
        """
}
