/// The one error type of the journal module.
public struct JournalError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String {
            case cannotOpen, corrupt, schemaTooNew, migrationChanged, migrationsMissing, writeFailed, notFound, closed, inUse
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The file or its directory cannot be opened or created.
        public static let cannotOpen = Code(.cannotOpen)
        /// The file is not a SQLite database, or fails its integrity check.
        public static let corrupt = Code(.corrupt)
        /// The database was written by a newer vps-gateway.
        public static let schemaTooNew = Code(.schemaTooNew)
        /// An applied migration's file changed since it was applied.
        public static let migrationChanged = Code(.migrationChanged)
        /// The migration files cannot be found or read.
        public static let migrationsMissing = Code(.migrationsMissing)
        /// A write (or its commit) failed; nothing of it was recorded.
        public static let writeFailed = Code(.writeFailed)
        /// No row has the request id.
        public static let notFound = Code(.notFound)
        /// The journal's writer has stopped.
        public static let closed = Code(.closed)
        /// Another gateway writes this journal (it holds its lock file).
        public static let inUse = Code(.inUse)

        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String
    public var cause: (any Error)?

    public init(code: Code, message: String, cause: (any Error)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String {
        if let cause { return "\(code): \"\(message)\" (cause: \(cause))" }
        return "\(code): \"\(message)\""
    }
}
