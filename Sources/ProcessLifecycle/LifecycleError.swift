/// The one error type of the module: a code to branch on, a message that says what was wrong
/// and what was expected, and the pid of the process in the way when there is one.
public struct LifecycleError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String {
            case alreadyRunning, lockFailed
        }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// Another process holds the lock.
        public static let alreadyRunning = Code(.alreadyRunning)
        /// The lock file could not be opened or locked (permissions, a missing directory).
        public static let lockFailed = Code(.lockFailed)

        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String
    /// The process holding the lock, as its lock file says (nil when unknown).
    public var holder: Int32?

    public init(code: Code, message: String, holder: Int32? = nil) {
        self.code = code
        self.message = message
        self.holder = holder
    }

    /// `pid 1234`, or `pid unknown`: for messages that name the process in the way.
    public var holderDescription: String { holder.map { "pid \($0)" } ?? "pid unknown" }

    public var description: String { "\(code): \"\(message)\"" }
}
