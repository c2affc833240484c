import GRPCCore

/// The one error type of the gateway module: a code to branch on, a message that says what
/// was wrong and what was expected, and the underlying error when there is one.
public struct GatewayError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String {
            case invalidConfiguration, listenFailed, adminSocketFailed, alreadyRunning
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A configuration value is missing or out of range.
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// The gRPC port could not be bound.
        public static let listenFailed = Code(.listenFailed)
        /// The admin socket could not be created.
        public static let adminSocketFailed = Code(.adminSocketFailed)
        /// Another gateway runs on the same admin socket (it holds the lock file).
        public static let alreadyRunning = Code(.alreadyRunning)

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
