/// The one error type of the inventory module.
public struct InventoryError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case invalidURL, unreadable, wrongSchema, queryFailed, unavailable }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The inventory URL is not one this build can open.
        public static let invalidURL = Code(.invalidURL)
        /// The file is missing, unreadable or not a SQLite database.
        public static let unreadable = Code(.unreadable)
        /// A table or column the lookup needs is missing.
        public static let wrongSchema = Code(.wrongSchema)
        /// A query failed at run time.
        public static let queryFailed = Code(.queryFailed)
        /// The database cannot be reached now: worth a retry, never "not found".
        public static let unavailable = Code(.unavailable)

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
