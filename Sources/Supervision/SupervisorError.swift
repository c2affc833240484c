/// The one error type of the supervision module.
public struct SupervisorError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case invalidConfiguration, notifySocketFailed, childGaveUp, alreadyRunning }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The configuration file is unreadable or names problems (listed in the message).
        public static let invalidConfiguration = Code(.invalidConfiguration)
        /// A child's notify socket could not be created.
        public static let notifySocketFailed = Code(.notifySocketFailed)
        /// The gateway, or a worker with `escalate` set, exceeded its restart intensity.
        public static let childGaveUp = Code(.childGaveUp)
        /// Another supervisor runs on the same configuration (it holds the notify directory's lock).
        public static let alreadyRunning = Code(.alreadyRunning)

        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \"\(message)\"" }
}

extension SupervisorError: Equatable {
    public static func == (lhs: SupervisorError, rhs: SupervisorError) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message
    }
}
