/// The one error type of the DHCP module.
public struct DHCPError: Error, CustomStringConvertible, Sendable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String { case leaseFileUnreadable, hostsFileUnwritable, signalFailed, invalidConfiguration }
        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// The lease file cannot be read, or is larger than the limit.
        public static let leaseFileUnreadable = Code(.leaseFileUnreadable)
        /// The hosts file cannot be written; the previous one is left as it was.
        public static let hostsFileUnwritable = Code(.hostsFileUnwritable)
        /// dnsmasq could not be told to reload.
        public static let signalFailed = Code(.signalFailed)
        /// A DHCP setting is unusable.
        public static let invalidConfiguration = Code(.invalidConfiguration)

        public var description: String { value.rawValue }
    }

    public var code: Code
    public var message: String

    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \"\(message)\"" }

    /// `call(...) failed: <strerror> (errno N)`.
    static func syscall(_ code: Code, _ call: String, _ error: Int32, _ what: String) -> DHCPError {
        DHCPError(code: code, message: "\(what): \(call) failed: \(String(cString: strerror(error))) (errno \(error))")
    }
}

#if canImport(Glibc)
import Glibc
#endif
