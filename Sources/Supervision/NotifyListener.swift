import Foundation
import NIOCore
import NIOPosix
import ProcessLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The notify socket the supervisor gives one child: a datagram Unix socket that the child's
/// `sd_notify` writes `KEY=VALUE` lines to, exactly as it would to systemd's.
/// The socket is bound when the listener is made, before the child starts: a message sent
/// before anyone bound the path would be lost, and a child says READY=1 only once.
struct NotifyListener: Sendable {
    let path: String
    private let fd: Int32
    /// The bound socket: a listener that ends removes the path only while it is still its
    /// own (a worker started again may already have bound a new socket there).
    private let ownedSocket: OwnedPath?

    /// Creates the socket, replacing a stale one (the supervisor's lock on the directory
    /// makes sure no other supervisor's is live). Throws when it cannot be made.
    init(path: String) throws {
        self.path = path
        self.fd = try Self.bind(path)
        self.ownedSocket = OwnedPath(claiming: path)
    }

    /// Hands every message's assignments to `receive` until cancelled; closes and removes the
    /// socket then. Call once.
    func run(_ receive: @escaping @Sendable ([String: String]) -> Void) async throws {
        // A datagram socket works with epoll; NIO reads it like a pipe, one datagram per read.
        let channel = try await NIOPipeBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.maxMessagesPerRead, value: 16)
            .takingOwnershipOfDescriptor(input: fd) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, Never>(wrappingChannelSynchronously: channel)
                }
            }
        defer { ownedSocket?.removeIfOwned() }
        try await channel.executeThenClose { inbound in
            for try await datagram in inbound {
                receive(Self.parse(String(buffer: datagram)))
            }
        }
    }

    /// `READY=1\nSTATUS=…` into a dictionary; later keys win.
    static func parse(_ message: String) -> [String: String] {
        var assignments: [String: String] = [:]
        for line in message.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            assignments[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return assignments
    }

    private static func bind(_ path: String) throws -> Int32 {
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw SupervisorError(code: .notifySocketFailed, message: "socket(AF_UNIX, SOCK_DGRAM) failed: errno \(errno)")
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw SupervisorError(code: .notifySocketFailed, message: "notify socket path '\(path)' is too long for a Unix socket")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let error = errno
            close(fd)
            throw SupervisorError(code: .notifySocketFailed, message: "bind(\(path)) failed: \(String(cString: strerror(error))) (errno \(error)); is notify_directory writable?")
        }
        return fd
    }
}
