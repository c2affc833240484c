import Foundation
import SystemdSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A manager's notify socket, made by the test: bound, read only when the test says so.
private final class ManagerSocket {
    let path: String
    let fd: Int32

    /// A file in the temp directory, or with `abstract` a name in the abstract namespace
    /// (`path` is then `@name`, as `$NOTIFY_SOCKET` writes it).
    init(abstract: Bool = false) throws {
        let name = "notify-\(UUID().uuidString.prefix(8))"
        path = abstract ? "@" + name : FileManager.default.temporaryDirectory.appendingPathComponent(name + ".sock").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
            if abstract { buffer[0] = 0 }
        }
        let length = abstract ? socklen_t(MemoryLayout<sa_family_t>.size + path.utf8.count) : socklen_t(MemoryLayout<sockaddr_un>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard fd >= 0, bound == 0 else { throw POSIXError(.EADDRINUSE) }
    }

    deinit {
        close(fd)
        if !path.hasPrefix("@") { unlink(path) }
    }

    /// Every datagram waiting, oldest first.
    func drain() -> [String] {
        var messages: [String] = [], buffer = [UInt8](repeating: 0, count: 4096)
        while case let count = recv(fd, &buffer, buffer.count, 0), count > 0 {
            messages.append(String(decoding: buffer[0..<count], as: UTF8.self))
        }
        return messages
    }
}

@Suite("Service notifier", .timeLimit(.minutes(5)))
struct ServiceNotifierTests {
    @Test("messages reach the manager's socket as KEY=value lines, a newline inside a value kept to one line")
    func messagesArrive() throws {
        let manager = try ManagerSocket()
        let notifier = ServiceNotifier(socket: manager.path)
        #expect(notifier.isSupervised)
        #expect(notifier.ready(status: "up\nand running"))
        #expect(notifier.watchdog())
        #expect(manager.drain() == ["READY=1\nSTATUS=up and running", "WATCHDOG=1"])
    }

    @Test("an abstract socket name (@name) is reached too")
    func abstractSocket() throws {
        let manager = try ManagerSocket(abstract: true)
        #expect(ServiceNotifier(socket: manager.path).status("abstract"))
        #expect(manager.drain() == ["STATUS=abstract"])
    }

    @Test("a manager that stops reading does not block the sender: once its queue is full a send returns false at once, and sends succeed again after it reads")
    func fullQueueNeverBlocks() throws {
        let manager = try ManagerSocket()
        let notifier = ServiceNotifier(socket: manager.path)
        // The kernel's queue for an unread datagram socket is net.unix.max_dgram_qlen (10 by
        // default); 10,000 sends are far past it, and each must return without waiting.
        let start = ContinuousClock.now
        var delivered = 0, dropped = 0
        for index in 0..<10_000 {
            if notifier.status("status \(index)") { delivered += 1 } else { dropped += 1 }
        }
        #expect(dropped > 0, "the queue never filled (\(delivered) delivered)")
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(!manager.drain().isEmpty)
        #expect(notifier.status("after the manager read"))
        #expect(manager.drain() == ["STATUS=after the manager read"])
    }

    @Test("without a socket, or to one nobody bound, a send is false and does nothing")
    func nobodyListens() {
        #expect(!ServiceNotifier(socket: "").isSupervised)
        #expect(!ServiceNotifier(socket: "").ready())
        #expect(!ServiceNotifier(socket: "/nonexistent/notify.sock").ready())
        #expect(!ServiceNotifier(socket: "relative/notify.sock").ready())
    }
}
