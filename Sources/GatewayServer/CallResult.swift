public import Foundation
// Public: an outcome converts to and from the journal's.
public import GatewayJournal

/// How a call through the gateway ended.
public struct CallResult: Sendable {
    public enum Outcome: String, Sendable, CaseIterable {
        /// A receiver had the answer.
        case ok
        /// Every receiver answered and none had it.
        case notFound = "not_found"
        /// No receiver was connected before the deadline.
        case noReceivers = "no_receivers"
        /// Receivers were asked but none gave a final answer in time.
        case deadlineExceeded = "deadline_exceeded"
        /// Receivers failed (errors, dropped streams, unimplemented method, bad payload).
        case failed
        /// The gateway began shutting down before the call ended: nothing is known. Never
        /// recorded: the journal keeps the request unfinished for the next start.
        case interrupted
    }

    public var outcome: Outcome
    /// The winning response's payload (only for `ok`).
    public var payload: Data
    /// The instance that answered (`ok`), if any.
    public var responder: ClientIdentity?
    /// What went wrong, naming each receiver that failed; empty for `ok`.
    public var error: String
    /// How many receivers the request was sent to.
    public var receivers: Int
    /// For `failed`: whether another attempt could end differently (a dropped stream or an
    /// internal error could; a payload every receiver refused as invalid could not).
    public var retryable: Bool

    package init(outcome: Outcome, payload: Data = Data(), responder: ClientIdentity? = nil, error: String = "", receivers: Int = 0, retryable: Bool = true) {
        self.outcome = outcome
        self.payload = payload
        self.responder = responder
        self.error = error
        self.receivers = receivers
        self.retryable = retryable
    }
}

extension CallResult.Outcome {
    /// What the journal records for this outcome; nil for `interrupted`, which it never stores.
    public var journaled: JournalOutcome? {
        switch self {
        case .ok: .ok
        case .notFound: .notFound
        case .noReceivers: .noReceivers
        case .deadlineExceeded: .deadlineExceeded
        case .failed: .failed
        case .interrupted: nil
        }
    }

    public init(_ journaled: JournalOutcome) {
        switch journaled {
        case .ok: self = .ok
        case .notFound: self = .notFound
        case .noReceivers: self = .noReceivers
        case .deadlineExceeded: self = .deadlineExceeded
        case .failed: self = .failed
        }
    }
}
