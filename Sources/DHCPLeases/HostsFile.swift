import Foundation
import GatewayProtocol
import TextFormats
#if canImport(Glibc)
import Glibc
#endif

/// The hosts file dnsmasq reads with `addn-hosts`: `<ip> <vps-id>` lines after a header, in
/// a stable order, replaced atomically and only when its content changes.
public struct HostsFile: Sendable {
    public struct Entry: Sendable, Hashable, Comparable {
        public var ip: String
        public var name: String

        public init(ip: String, name: String) {
            self.ip = ip
            self.name = name
        }

        /// IPv4 addresses in numeric order, then the name.
        public static func < (lhs: Entry, rhs: Entry) -> Bool {
            let (left, right) = (Self.numeric(lhs.ip), Self.numeric(rhs.ip))
            if left != right { return left < right }
            return (lhs.ip, lhs.name) < (rhs.ip, rhs.name)
        }

        private static func numeric(_ ip: String) -> UInt64 {
            var address = in_addr()
            guard inet_pton(AF_INET, ip, &address) == 1 else { return UInt64.max }
            return UInt64(UInt32(bigEndian: address.s_addr))
        }
    }

    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// The file's text for `entries`: no timestamp, so unchanged entries give unchanged bytes.
    /// An entry whose name is not a DNS label or whose address is not an IP address is left
    /// out: the answers were checked where they came in, and this is the last line before
    /// dnsmasq.
    public static func render(_ entries: some Sequence<Entry>) -> String {
        let sorted = Set(entries).filter { HostsName.isValid($0.name) && IPAddressText.isValid($0.ip) }.sorted()
        var text = "# Written by vps-gateway from dnsmasq's DHCP leases: <ip> <vps-id>. Do not edit;\n"
        text += "# the gateway replaces this file whenever the leases or their owners change.\n"
        for entry in sorted { text += "\(entry.ip) \(entry.name)\n" }
        return text
    }

    /// Replaces the file with `content` unless it holds exactly that already. Returns whether
    /// it wrote. The new content goes to a temp file in the same directory, is fsynced and
    /// renamed over the old one, then the directory is fsynced: a reader sees the old file or
    /// the new one, never a mix, and a crash leaves one of them.
    @discardableResult
    public func replace(with content: String) throws -> Bool {
        var info = stat()
        if lstat(path, &info) == 0 {
            if info.st_mode & S_IFMT == S_IFDIR {
                throw DHCPError(code: .hostsFileUnwritable, message: "hosts file '\(path)' is a directory; remove it or choose another --dhcp-hosts")
            }
            if let current = FileManager.default.contents(atPath: path), current == Data(content.utf8) { return false }
        }
        let directory = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        let temporary = "\(directory)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let fd = Self.retrying { open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        guard fd >= 0 else {
            throw DHCPError.syscall(.hostsFileUnwritable, "open(\(temporary))", errno, "cannot write hosts file '\(path)' (the previous one is unchanged)")
        }
        var failure: DHCPError?
        let bytes = Array(content.utf8)
        var offset = 0
        while offset < bytes.count && failure == nil {
            let written = bytes.withUnsafeBytes { buffer in
                Self.retrying { write(fd, buffer.baseAddress! + offset, buffer.count - offset) }
            }
            if written < 0 {
                failure = .syscall(.hostsFileUnwritable, "write(\(temporary))", errno, "cannot write hosts file '\(path)' (the previous one is unchanged)")
            } else {
                offset += written
            }
        }
        if failure == nil, Self.retrying({ fsync(fd) }) != 0 {
            failure = .syscall(.hostsFileUnwritable, "fsync(\(temporary))", errno, "cannot write hosts file '\(path)' (the previous one is unchanged)")
        }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 {
            failure = .syscall(.hostsFileUnwritable, "rename(\(temporary), \(path))", errno, "cannot replace hosts file '\(path)' (the previous one is unchanged)")
        }
        if let failure {
            unlink(temporary)
            throw failure
        }
        // The rename is durable only once the directory is.
        let directoryFD = Self.retrying { open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
        if directoryFD >= 0 {
            _ = Self.retrying { fsync(directoryFD) }
            close(directoryFD)
        }
        return true
    }

    /// Repeats a system call interrupted by a signal.
    static func retrying<Result: BinaryInteger>(_ call: () -> Result) -> Result {
        while true {
            let result = call()
            if result < 0 && errno == EINTR { continue }
            return result
        }
    }
}
