import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket the test points `NOTIFY_SOCKET` at, to read what a process tells its
/// service manager (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`).
final class NotifySocket: Sendable {
    let path: String
    private let fd: Int32
    private let received = Mutex<[String]>([])

    init(path: String) throws {
        self.path = path
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("socket(AF_UNIX, SOCK_DGRAM) failed: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            close(fd)
            throw ClusterError("bind(\(path)) failed: errno \(errno)")
        }
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Every message so far, oldest first (reads what is waiting without blocking).
    var messages: [String] {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            let message = String(decoding: buffer[0..<count], as: UTF8.self)
            received.withLock { $0.append(message) }
        }
        return received.withLock { $0 }
    }

    /// Fills the socket's receive queue from another socket, as a manager that stopped
    /// reading would have it; returns how many datagrams it took (until the kernel refused).
    @discardableResult
    func fillQueue() -> Int {
        let sender = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(sender) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
        }
        let filler = Array("X-TEST-FILLER=1".utf8)
        var count = 0
        while count < 100_000 {
            let sent = filler.withUnsafeBytes { bytes in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(sender, bytes.baseAddress, bytes.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                    }
                }
            }
            guard sent > 0 else { break }
            count += 1
        }
        return count
    }

    /// Waits (time-limited) for a message containing `text`.
    func waitFor(_ text: String, timeout: Duration = .seconds(15)) async -> Bool {
        await poll(timeout: timeout) { self.messages.contains { $0.contains(text) } }
    }
}
