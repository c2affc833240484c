/// The one error type of the worker module: a code, a message that says what was wrong and
/// what was expected, and the underlying error when there is one.
public struct WorkerError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case invalidEndpoint, invalidConfiguration }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A gateway URL or an endpoint list entry cannot be used.
        public static let invalidEndpoint = Code(.invalidEndpoint)
        /// A configuration value is missing or out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)

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
